"""The upstream provider over HTTP (aiohttp: chosen by measurement, see BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import aiohttp
import orjson
from yarl import URL

from shared.byok import HEADER as CLIENT_KEY_HEADER
from shared.config import Settings
from shared.errors import error_body
from shared.families import Family
from shared.families import error_body as family_error_body
from shared.key_pool import KeyOutcome, KeyPool, KeysExhausted, PooledKey, key_outcome, masked
from shared.providers import Provider, providers

ERROR_BODY_LIMIT = 1 << 20
ACTOR_ID_HEADER = "X-AI-Bridge-Actor-ID"
ACTOR_METADATA_HEADER_PREFIX = "X-AI-Bridge-Actor-Metadata-"


class UpstreamFailure(Exception):
    """The upstream answered an error, could not be reached or stopped answering; carries the status and the
    body for the client (an upstream's own error body, already in its family's shape)."""

    def __init__(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = dict(headers or {})  # the client's, before its stream opens (e.g. Retry-After)

    def body_for(self, family: Family) -> bytes:
        """The body in ``family``'s shape."""
        return self.body


class GatewayFailure(UpstreamFailure):
    """A failure the gateway describes itself (unreachable, timed out, cut short, too large), rendered in the
    shape of the family of the interception it ends."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        type_: str = "upstream_error",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(status, error_body(message, type_, code), headers)
        self.problem = (message, type_, code)

    def body_for(self, family: Family) -> bytes:
        if family is Family.OPENAI_CHAT:
            return self.body
        return family_error_body(family, self.status, *self.problem)


class UpstreamCut(GatewayFailure):
    """The upstream's answer stopped short: its connection closed or reset mid-body, or its stream ended
    without the API family's end marker."""


class Upstream:
    """One provider's HTTP API (shared/providers.py), as the worker calls it: with its one central key, or
    with the keys of its ``pool`` (shared/key_pool.py) when it has several."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        provider: Provider,
        settings: Settings,
        pool: KeyPool | None = None,
    ) -> None:
        self._session = session
        self._provider = provider
        self._pool = pool
        self._headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        self._key_headers = provider.auth_headers()
        self._key_hint = masked(provider.key.get_secret_value()) if provider.key is not None else None
        self._timeout = upstream_timeout(settings)

    @asynccontextmanager
    async def post(
        self,
        path: str,
        body: dict[str, Any],
        headers: Mapping[str, str] | None = None,
        on_key: Callable[[str], None] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST ``body`` to the upstream, with ``headers`` over the usual ones; failures to connect or to
        hear back become UpstreamFailure, a connection lost while the block reads the body UpstreamCut.
        With a pool of keys, an answer that puts its key out (shared/key_pool.py) is not the block's: the
        call is made again with the next key, and when none is left the block gets UpstreamFailure.
        ``on_key`` hears the masked hint of the central key of the answer the block gets."""
        data = orjson.dumps(body)
        async with guarded(self._answer(path, data, headers or {}, on_key or _ignore)) as response:
            yield response

    @asynccontextmanager
    async def _answer(
        self, path: str, data: bytes, headers: Mapping[str, str], on_key: Callable[[str], None]
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        client_key = self._provider.key_header in headers
        if self._pool is None or client_key:  # one central key (or none), or the client's own
            async with self._send(path, data, {**self._key_headers, **headers}) as response:
                if self._key_hint is not None and not client_key:
                    on_key(self._key_hint)
                yield response
            return
        tried: list[PooledKey] = []
        while True:
            try:
                key = await self._pool.pick(tried)
            except KeysExhausted as exhausted:
                raise exhausted_failure(self._provider, exhausted) from None
            key_headers = self._provider.auth_headers(key.key.get_secret_value())
            async with self._send(path, data, {**headers, **key_headers}) as response:
                outcome = key_outcome(response.status)
                if outcome is KeyOutcome.KEPT:
                    on_key(key.hint)
                    yield response
                    return
                await self._pool.report(key, outcome, response.status, response.headers)
            tried.append(key)

    def _send(
        self, path: str, data: bytes, headers: Mapping[str, str]
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        return self._session.post(
            self._provider.base_url + path,
            data=data,
            headers={**self._headers, **headers},
            timeout=self._timeout,
        )

    def auth_headers(self, client_key: str) -> dict[str, str]:
        """The headers that authenticate with the client's own key instead of the central one."""
        return self._provider.auth_headers(client_key)

    def keyless(self, headers: Mapping[str, str] | None) -> str | None:
        """For a request sent with ``headers`` over the usual ones and no upstream key at all, what to tell
        its client when the upstream refuses it (401): that the gateway has none. None when a key went."""
        if self._provider.key_header in {**self._key_headers, **(headers or {})}:
            return None
        return f"{no_key_message(self._provider)} and the request brought none ({CLIENT_KEY_HEADER})"


def _ignore(hint: str) -> None:
    pass


def exhausted_failure(provider: Provider, exhausted: KeysExhausted) -> GatewayFailure:
    """What the client hears when no key of ``provider`` can be used: 429 with the seconds until the soonest
    is back when some are cooling, 503 when every one was refused (only a worker's start enables them)."""
    if exhausted.retry_after is None:
        return GatewayFailure(
            503,
            f"every upstream key of provider '{provider.name}' was refused by the upstream (401/403)",
            "upstream_keys_disabled",
            "server_error",
        )
    return GatewayFailure(
        429,
        f"every upstream key of provider '{provider.name}' is rate limited; "
        f"the soonest is back in {exhausted.retry_after} s",
        "upstream_keys_rate_limited",
        "requests",
        {"Retry-After": str(exhausted.retry_after)},
    )


def no_key_message(provider: Provider) -> str:
    return f"this gateway has no upstream key configured ({provider.key_variable})"


def missing_key_warning(settings: Settings) -> str | None:
    """The line a process that calls the upstreams says at start when it has no key for some of them."""
    keyless = [
        no_key_message(each)
        for each in providers(settings)
        if each.takes_keys and not each.takes_user_token and each.key is None
    ]
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


def guarded_post(
    session: aiohttp.ClientSession,
    url: str | URL,
    data: bytes,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
    """POST ``data`` to ``url``, guarded as ``guarded`` says."""
    return guarded(session.post(url, data=data, headers=headers, timeout=timeouts))


@asynccontextmanager
async def guarded(
    request: AbstractAsyncContextManager[aiohttp.ClientResponse],
) -> AsyncIterator[aiohttp.ClientResponse]:
    """The answer to ``request``: failures to connect or to hear back become UpstreamFailure, a connection lost
    while the block reads the body UpstreamCut."""
    async with guard_upstream():
        async with request as response:
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
