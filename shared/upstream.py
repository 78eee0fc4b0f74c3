"""The upstream provider over HTTP (aiohttp: chosen by measurement, see BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from shared.byok import HEADER as CLIENT_KEY_HEADER
from shared.config import Settings
from shared.errors import error_body, normalize_error_body, prefix_message

ERROR_BODY_LIMIT = 1 << 20
ACTOR_ID_HEADER = "X-AI-Bridge-Actor-ID"
ACTOR_METADATA_HEADER_PREFIX = "X-AI-Bridge-Actor-Metadata-"
AUTHORIZATION = "Authorization"
NO_UPSTREAM_KEY = "this gateway has no upstream key configured (AIBRIDGE_OPENAI_API_KEY)"


class UpstreamFailure(Exception):
    """The upstream could not be reached or stopped answering; carries the status and body for the client."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class UpstreamCut(UpstreamFailure):
    """The upstream's answer stopped short: its connection closed or reset mid-body, or its stream ended
    without the API family's end marker."""


class OpenAIUpstream:
    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._base_url = settings.openai_base_url
        self._headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if settings.openai_api_key is not None:
            self._headers.update(bearer(settings.openai_api_key.get_secret_value()))
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.upstream_connect_timeout,
            sock_read=settings.upstream_read_timeout,
        )

    @asynccontextmanager
    async def post(
        self, path: str, body: dict[str, Any], headers: Mapping[str, str] | None = None
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST ``body`` to the upstream, with ``headers`` over the usual ones; failures to connect or to
        hear back become UpstreamFailure, a connection lost while the block reads the body UpstreamCut."""
        async with guard_upstream():
            async with self._session.post(
                self._base_url + path,
                data=orjson.dumps(body),
                headers={**self._headers, **headers} if headers else self._headers,
                timeout=self._timeout,
            ) as response:
                try:
                    yield response
                except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
                    raise UpstreamCut(
                        502,
                        error_body(
                            f"the upstream connection broke before the answer was complete: {exc}",
                            "upstream_error",
                            "upstream_connection_lost",
                        ),
                    ) from exc

    def error_body(self, status: int, raw: bytes, headers: Mapping[str, str] | None) -> bytes:
        """The client's error body for the upstream's error answer (``status``, ``raw`` body) to a request
        sent with ``headers`` over the usual ones: a 401 to a request that carried no upstream key at all
        says the gateway has none, before the upstream's own message."""
        body = normalize_error_body(raw, f"upstream answered {status}")
        if status == 401 and AUTHORIZATION not in {**self._headers, **(headers or {})}:
            return prefix_message(
                body, f"{NO_UPSTREAM_KEY} and the request brought none ({CLIENT_KEY_HEADER})"
            )
        return body


def bearer(upstream_key: str) -> dict[str, str]:
    """The header that authenticates to the upstream with ``upstream_key`` (the central key, or instead of it
    the client's own)."""
    return {AUTHORIZATION: f"Bearer {upstream_key}"}


def missing_key_warning(settings: Settings) -> str | None:
    """The line a process that calls the upstream says at start when it has no upstream key."""
    if settings.openai_api_key is not None:
        return None
    return (
        f"{NO_UPSTREAM_KEY}: requests go upstream without credentials unless a client brings its own key "
        f"({CLIENT_KEY_HEADER})"
    )


def actor_headers(actor_id: str, metadata: Mapping[str, str]) -> dict[str, str]:
    """The headers that tell the upstream (or a proxy before it) who the actor is, as the reference names
    them: ``X-AI-Bridge-Actor-ID`` and one ``X-AI-Bridge-Actor-Metadata-<Key>`` per metadata entry."""
    headers = {ACTOR_ID_HEADER: actor_id}
    headers.update({ACTOR_METADATA_HEADER_PREFIX + key: value for key, value in metadata.items()})
    return headers


@asynccontextmanager
async def guard_upstream() -> AsyncIterator[None]:
    """Map transport failures inside the block to UpstreamFailure (502 unreachable, 504 timed out)."""
    try:
        yield
    except TimeoutError as exc:
        raise UpstreamFailure(
            504, error_body("the upstream did not answer in time", "upstream_error", "upstream_timeout")
        ) from exc
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamFailure(
            502,
            error_body(
                f"the upstream is unreachable: {exc.os_error}", "upstream_error", "upstream_unreachable"
            ),
        ) from exc
    except (aiohttp.ClientError, asyncio.IncompleteReadError) as exc:
        raise UpstreamFailure(
            502,
            error_body(
                f"the upstream connection failed: {exc}", "upstream_error", "upstream_connection_lost"
            ),
        ) from exc


def new_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, read_bufsize=1 << 20, auto_decompress=True)
