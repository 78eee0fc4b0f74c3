"""The upstream's response headers a client gets: its rate-limit state and request ids, so that an SDK can
back off on the provider's hint and a support request can name the provider's request. Nothing else: no
hop-by-hop or content header, nothing of the upstream's own (cookies, servers)."""

from __future__ import annotations

from collections.abc import Iterable

RELAYED_NAMES = frozenset(
    {"retry-after", "retry-after-ms", "x-request-id", "request-id", "openai-processing-ms"}
)
RELAYED_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")


def is_relayed(name: str) -> bool:
    name = name.lower()
    return name in RELAYED_NAMES or name.startswith(RELAYED_PREFIXES)


def relayed_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The relayed ones of ``headers`` (name-value pairs, as ``.items()`` gives them), names in lower case;
    a value that is not printable ASCII (which no provider sends) is left out, not mangled."""
    return {
        name.lower(): value
        for name, value in headers
        if is_relayed(name) and value.isascii() and value.isprintable()
    }
