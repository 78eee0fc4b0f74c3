"""Passthrough routes: a request the gateway does not bridge goes to the provider as it came, with no queue;
the request body is streamed up and the response streamed down, neither buffered. Only allow-listed request
headers go up (and the provider's credentials), only the relayed response headers come down; an upstream
error not in the family's shape is normalised to it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from urllib.parse import quote

import aiohttp
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.auth import Caller
from api.bridge import client_upstream_key
from api.errors import GatewayError
from api.limits import BodyTimeout, BodyTooLarge
from api.route_family import route_family
from api.state import State
from shared.families import Family, normalize_error
from shared.providers import provider
from shared.relayed_headers import relayed_headers
from shared.upstream import ERROR_BODY_LIMIT, UpstreamFailure, guard_upstream, upstream_timeout

ALWAYS_FORWARDED = ("content-type", "accept")


class UploadFailure:
    """Where the streamed request body leaves its failure, which the upstream client reports as its own."""

    def __init__(self) -> None:
        self.error: GatewayError | None = None


async def streamed_body(
    request: Request, limit: int, max_seconds: float, failure: UploadFailure
) -> AsyncIterator[bytes]:
    """The request body as it arrives: BodyTooLarge past ``limit`` bytes, BodyTimeout if it takes longer
    than ``max_seconds`` (left in ``failure`` too)."""
    deadline = asyncio.get_running_loop().time() + max_seconds
    parts = request.stream().__aiter__()
    received = 0
    while True:
        try:
            async with asyncio.timeout_at(deadline):
                part = await anext(parts)
        except StopAsyncIteration:
            return
        except TimeoutError:
            failure.error = BodyTimeout(max_seconds)
            raise failure.error from None
        received += len(part)
        if received > limit:
            failure.error = BodyTooLarge(limit)
            raise failure.error
        yield part


class RelayedBody(StreamingResponse):
    """The upstream's response body streamed to the client; the upstream connection is let go at the end,
    however it comes (a cut upstream cuts the client's response, never one that looks complete)."""

    def __init__(self, upstream: aiohttp.ClientResponse, headers: dict[str, str]) -> None:
        super().__init__(upstream.content.iter_any(), upstream.status, headers)
        self._upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._upstream.close()


async def proxy(state: State, request: Request, provider_name: str, forwarded: frozenset[str]) -> Response:
    settings = state.settings
    family = route_family(request.app, request.url.path)
    upstream = provider(settings, provider_name)
    client_key = client_upstream_key(state, request, provider_name)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise BodyTooLarge(settings.max_body_bytes)
    path = quote(request.url.path.removeprefix(upstream.route_prefix), safe="/:@-._~")
    query = request.url.query
    headers = {name: value for name, value in request.headers.items() if name in forwarded}
    headers.update(upstream.auth_headers(client_key))
    headers["Accept-Encoding"] = "identity"
    failure = UploadFailure()
    body = None
    if request.method == "POST":  # a GET's body, if any, is not sent
        body = streamed_body(request, settings.max_body_bytes, settings.body_timeout, failure)
        if declared is not None:  # the upstream gets the body as framed as it came (chunked if so)
            headers["Content-Length"] = declared
    timeout = upstream_timeout(settings)
    try:
        async with guard_upstream():
            response = await state.session.request(
                request.method,
                upstream.base_url + path + (f"?{query}" if query else ""),
                data=body,
                headers=headers,
                timeout=timeout,
            )
    except UpstreamFailure as exc:
        if failure.error is not None:
            raise failure.error from None
        return _error(family, exc.status, exc.body, {})
    relayed = relayed_headers(response.headers.items())
    if response.status >= 400:
        try:
            async with guard_upstream():
                raw = await response.content.read(ERROR_BODY_LIMIT)
        except UpstreamFailure as exc:
            return _error(family, exc.status, exc.body, relayed)
        finally:
            response.close()
        return _error(family, response.status, raw, relayed)
    if content_type := response.headers.get("Content-Type"):
        relayed["content-type"] = content_type
    return RelayedBody(response, relayed)


def _error(family: Family, status: int, raw: bytes, headers: dict[str, str]) -> Response:
    return Response(normalize_error(family, status, raw), status, headers, media_type="application/json")


def forwarded_headers(headers: Iterable[str]) -> frozenset[str]:
    """The request headers a passthrough forwards: ``headers`` (lower case) besides content type and accept."""
    return frozenset((*ALWAYS_FORWARDED, *headers))


def add_passthrough_route(
    router: APIRouter, method: str, path: str, *, provider: str, headers: Iterable[str] = ()
) -> None:
    """``<method> <path>`` passed through to ``provider``, with the request headers named in ``headers``
    (lower case) besides content type and accept (and a POST's content length)."""
    forwarded = forwarded_headers(headers)

    async def passthrough(request: Request, state: State, _: Caller) -> Response:
        return await proxy(state, request, provider, forwarded)

    router.add_api_route(path, passthrough, methods=[method], name=f"{provider} {method} {path}")
