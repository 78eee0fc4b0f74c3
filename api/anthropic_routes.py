"""The routes of an Anthropic provider, under ``/<name>``: Messages bridged through the queue; token counting
and models passed through (a Bedrock provider, which has neither, answers those 501)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.auth import Caller
from api.bridge import BodyField, add_bridged_route, parse_conversation
from api.passthrough import add_passthrough_route
from shared.families import Family, error_body
from shared.providers import Provider

# The fields the gateway itself reads or rewrites, with the types each may have.
MESSAGES_FIELDS = (
    BodyField("max_tokens", (int,), "an integer", required=True),
    BodyField("stream", (bool,), "a boolean"),
    BodyField("tools", (list,), "an array", of_objects=True),
    BodyField("system", (str, list), "a string or an array"),
    BodyField("thinking", (dict,), "an object"),
)

# The client's, sent upstream unchanged; the user agent is how the provider tells Claude Code (claude-cli/...)
# from other clients.
UPSTREAM_HEADERS = ("anthropic-version", "anthropic-beta", "user-agent")


PASSED_THROUGH = (
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id:path}"),
)


def parse_messages_request(raw: bytes) -> dict[str, Any]:
    return parse_conversation(raw, MESSAGES_FIELDS)


def anthropic_router(
    provider: Provider, extra_headers: tuple[str, ...] = (), *, passthrough: bool = True
) -> APIRouter:
    """The provider's Messages routes; ``extra_headers``: more of the client's headers that go upstream;
    ``passthrough``: with the token counting and models routes."""
    headers = (*UPSTREAM_HEADERS, *extra_headers)
    router = _messages_router(provider, headers)
    for method, path in PASSED_THROUGH if passthrough else ():
        add_passthrough_route(router, method, path, provider=provider.name, headers=headers)
    return router


def bedrock_router(provider: Provider) -> APIRouter:
    router = _messages_router(provider, UPSTREAM_HEADERS)
    message = f"provider '{provider.name}' is AWS Bedrock, whose runtime API has no equivalent of this route"

    async def not_on_bedrock(_: Caller) -> Response:
        body = error_body(Family.ANTHROPIC_MESSAGES, 501, message, "not_implemented", None)
        return Response(body, 501, media_type="application/json")

    for method, path in PASSED_THROUGH:
        router.add_api_route(path, not_on_bedrock, methods=[method], name=f"{provider.name} {method} {path}")
    return router


def _messages_router(provider: Provider, headers: tuple[str, ...]) -> APIRouter:
    router = APIRouter(prefix=provider.route_prefix)
    add_bridged_route(
        router,
        "/v1/messages",
        family=Family.ANTHROPIC_MESSAGES,
        provider=provider.name,
        parse=parse_messages_request,
        upstream_headers=headers,
    )
    return router
