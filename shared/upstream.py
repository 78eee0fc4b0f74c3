"""The upstream provider over HTTP (aiohttp: chosen by measurement, see BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
from yarl import URL

from shared.byok import HEADER as CLIENT_KEY_HEADER
from shared.config import Settings
from shared.errors import error_body
from shared.families import Family
from shared.families import error_body as family_error_body
from shared.providers import Provider, providers

ERROR_BODY_LIMIT = 1 << 20
ACTOR_ID_HEADER = "X-AI-Bridge-Actor-ID"
ACTOR_METADATA_HEADER_PREFIX = "X-AI-Bridge-Actor-Metadata-"


class UpstreamFailure(Exception):
    """The upstream answered an error, could not be reached or stopped answering; carries the status and the
    body for the client (an upstream's own error body, already in its family's shape)."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body

    def body_for(self, family: Family) -> bytes:
        """The body in ``family``'s shape."""
        return self.body


class GatewayFailure(UpstreamFailure):
    """A failure the gateway describes itself (unreachable, timed out, cut short, too large), rendered in the
    shape of the family of the interception it ends."""

    def __init__(self, status: int, message: str, code: str, type_: str = "upstream_error") -> None:
        super().__init__(status, error_body(message, type_, code))
        self.problem = (message, type_, code)

    def body_for(self, family: Family) -> bytes:
        if family is Family.OPENAI_CHAT:
            return self.body
        return family_error_body(family, self.status, *self.problem)


class UpstreamCut(GatewayFailure):
    """The upstream's answer stopped short: its connection closed or reset mid-body, or its stream ended
    without the API family's end marker."""


class Upstream:
    """One provider's HTTP API (shared/providers.py), as the worker calls it."""

    def __init__(self, session: aiohttp.ClientSession, provider: Provider, settings: Settings) -> None:
        self._session = session
        self._provider = provider
        self._headers = {
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
            **provider.auth_headers(),
        }
        self._timeout = upstream_timeout(settings)

    @asynccontextmanager
    async def post(
        self, path: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST ``body`` to the upstream, with ``headers`` over the usual ones; failures to connect or to
        hear back become UpstreamFailure, a connection lost while the block reads the body UpstreamCut."""
        async with guarded_post(
            self._session,
            self._provider.base_url + path,
            orjson.dumps(body),
            {**self._headers, **headers} if headers else self._headers,
            self._timeout,
        ) as response:
            yield response

    def auth_headers(self, client_key: str) -> dict[str, str]:
        """The headers that authenticate with the client's own key instead of the central one."""
        return self._provider.auth_headers(client_key)

    def keyless(self, headers: Mapping[str, str] | None) -> str | None:
        """For a request sent with ``headers`` over the usual ones and no upstream key at all, what to tell
        its client when the upstream refuses it (401): that the gateway has none. None when a key went."""
        if self._provider.key_header in {**self._headers, **(headers or {})}:
            return None
        return f"{no_key_message(self._provider)} and the request brought none ({CLIENT_KEY_HEADER})"


def no_key_message(provider: Provider) -> str:
    return f"this gateway has no upstream key configured ({provider.key_variable})"


def missing_key_warning(settings: Settings) -> str | None:
    """The line a process that calls the upstreams says at start when it has no key for some of them."""
    keyless = [no_key_message(each) for each in providers(settings) if each.takes_keys and each.key is None]
    if not keyless:
        return None
    return (
        f"{'; '.join(keyless)}: requests go upstream without credentials unless a client brings its own key "
        f"({CLIENT_KEY_HEADER})"
    )


def actor_headers(actor_id: str, metadata: Mapping[str, str]) -> dict[str, str]:
    """The headers that tell the upstream (or a proxy before it) who the actor is, as the reference names
    them: ``X-AI-Bridge-Actor-ID`` and one ``X-AI-Bridge-Actor-Metadata-<Key>`` per metadata entry."""
    headers = {ACTOR_ID_HEADER: actor_id}
    headers.update({ACTOR_METADATA_HEADER_PREFIX + key: value for key, value in metadata.items()})
    return headers


@asynccontextmanager
async def guarded_post(
    session: aiohttp.ClientSession,
    url: str | URL,
    data: bytes,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """POST ``data`` to ``url``: failures to connect or to hear back become UpstreamFailure, a connection lost
    while the block reads the body UpstreamCut."""
    async with guard_upstream():
        async with session.post(url, data=data, headers=headers, timeout=timeouts) as response:
            try:
                yield response
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                raise UpstreamCut(
                    502,
                    f"the upstream connection broke before the answer was complete: {exc}",
                    "upstream_connection_lost",
                ) from exc


def upstream_timeout(settings: Settings) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None, connect=settings.upstream_connect_timeout, sock_read=settings.upstream_read_timeout
    )


@asynccontextmanager
async def guard_upstream() -> AsyncIterator[None]:
    """Map transport failures inside the block to GatewayFailure (502 unreachable, 504 timed out)."""
    try:
        yield
    except TimeoutError as exc:
        raise GatewayFailure(504, "the upstream did not answer in time", "upstream_timeout") from exc
    except aiohttp.ClientConnectorError as exc:
        raise GatewayFailure(
            502, f"the upstream is unreachable: {exc.os_error}", "upstream_unreachable"
        ) from exc
    except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
        raise GatewayFailure(
            502, f"the upstream connection failed: {exc}", "upstream_connection_lost"
        ) from exc


def new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, read_bufsize=1 << 20, auto_decompress=True)
