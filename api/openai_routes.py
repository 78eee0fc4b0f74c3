"""The routes of an OpenAI provider, under ``/<name>/v1``: chat completions and Responses bridged through the
queue, background responses answered by the gateway; models, stored responses and conversations passed
through."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from api.auth import Caller
from api.background import cancel_background, delete_background, retrieve, stream_background
from api.bridge import BodyField, add_bridged_route, parse_conversation, parse_request
from api.passthrough import add_passthrough_route, forwarded_headers, proxy
from api.state import State
from shared.background import interception_of
from shared.families import Family
from shared.providers import Provider

# The optional fields the gateway itself reads or rewrites (worker/families/openai_chat.py), with the type each must have.
CHAT_FIELDS = (
    BodyField("stream", (bool,), "a boolean"),
    BodyField("stream_options", (dict,), "an object"),
    BodyField("tools", (list,), "an array", of_objects=True),
    BodyField("n", (int,), "an integer"),
)

# The fields of a Responses request the gateway reads or rewrites (worker/families/openai_responses.py).
RESPONSES_FIELDS = (
    BodyField("input", (str, list), "a string or an array"),
    BodyField("stream", (bool,), "a boolean"),
    BodyField("tools", (list,), "an array", of_objects=True),
    BodyField("background", (bool,), "a boolean"),
)

UPSTREAM_HEADERS = ("openai-organization", "openai-project", "openai-beta", "user-agent")
CODEX_HEADERS = ("originator", "session-id")  # what Codex sends to say which client and session it is


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    return parse_conversation(raw, CHAT_FIELDS)


def parse_responses_request(raw: bytes) -> dict[str, Any]:
    return parse_request(raw, RESPONSES_FIELDS)


PROVIDER_RESPONSES = (  # the provider's, and the gateway's ids are answered before these
    ("GET", "/responses/{response_id}/input_items"),
    ("POST", "/responses/input_tokens"),
    ("POST", "/conversations"),
    *((method, "/conversations/{rest:path}") for method in ("GET", "POST", "DELETE")),
)


def openai_router(provider: Provider, extra_headers: tuple[str, ...] = ()) -> APIRouter:
    """The provider's OpenAI routes; ``extra_headers``: more of the client's headers that go upstream."""
    router = APIRouter(prefix=provider.route_prefix)
    name = provider.name
    headers = (*UPSTREAM_HEADERS, *extra_headers)
    add_bridged_route(
        router,
        "/chat/completions",
        family=Family.OPENAI_CHAT,
        provider=name,
        parse=parse_chat_request,
        upstream_headers=headers,
    )
    add_passthrough_route(router, "GET", "/models", provider=name, headers=headers)
    add_passthrough_route(router, "GET", "/models/{model_id:path}", provider=name, headers=headers)
    add_bridged_route(
        router,
        "/responses",
        family=Family.OPENAI_RESPONSES,
        provider=name,
        parse=parse_responses_request,
        upstream_headers=(*headers, *CODEX_HEADERS),
        background=True,
    )
    add_background_routes(router, name, forwarded_headers(headers))
    for method, path in PROVIDER_RESPONSES:
        add_passthrough_route(router, method, path, provider=name, headers=headers)
    return router


def add_background_routes(router: APIRouter, provider: str, passed_through: frozenset[str]) -> None:
    """``GET``, ``DELETE`` and ``POST .../cancel`` of ``/responses/{id}``: a background response of the
    gateway's own is answered here (its object, or its events after ``starting_after``); any other id is
    the provider's, passed through."""

    async def get_response(
        response_id: str,
        request: Request,
        state: State,
        actor: Caller,
        stream: bool = False,
        starting_after: Annotated[int | None, Query(ge=0)] = None,
    ) -> Response:
        interception_id = interception_of(response_id)
        if interception_id is None:
            return await proxy(state, request, provider, passed_through)
        if stream:
            return await stream_background(state, interception_id, response_id, actor, starting_after)
        return JSONResponse(await retrieve(state, interception_id, response_id, actor))

    async def cancel_response(response_id: str, request: Request, state: State, actor: Caller) -> Response:
        interception_id = interception_of(response_id)
        if interception_id is None:
            return await proxy(state, request, provider, passed_through)
        return JSONResponse(await cancel_background(state, interception_id, response_id, actor))

    async def delete_response(response_id: str, request: Request, state: State, actor: Caller) -> Response:
        interception_id = interception_of(response_id)
        if interception_id is None:
            return await proxy(state, request, provider, passed_through)
        return JSONResponse(await delete_background(state, interception_id, response_id, actor))

    router.add_api_route("/responses/{response_id}", get_response, methods=["GET"])
    router.add_api_route("/responses/{response_id}/cancel", cancel_response, methods=["POST"])
    router.add_api_route("/responses/{response_id}", delete_response, methods=["DELETE"])
