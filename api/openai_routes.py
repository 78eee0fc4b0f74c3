"""Routes under /openai/v1: chat completions and Responses bridged through the queue; models, stored
responses and conversations passed through."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.bridge import BodyField, add_bridged_route, parse_conversation, parse_request
from api.errors import GatewayError
from api.passthrough import add_passthrough_route
from shared.families import Family
from shared.providers import OPENAI

router = APIRouter(prefix="/openai/v1")

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
    body = parse_request(raw, RESPONSES_FIELDS)
    if body.get("background") is True:
        message = "background responses are not supported by this gateway yet; send the request without it"
        raise GatewayError(
            501, message, "invalid_request_error", "background_unsupported", param="background"
        )
    return body


add_bridged_route(
    router,
    "/chat/completions",
    family=Family.OPENAI_CHAT,
    provider=OPENAI,
    parse=parse_chat_request,
    upstream_headers=UPSTREAM_HEADERS,
)
add_passthrough_route(router, "GET", "/models", provider=OPENAI, headers=UPSTREAM_HEADERS)
add_passthrough_route(router, "GET", "/models/{model_id:path}", provider=OPENAI, headers=UPSTREAM_HEADERS)
add_bridged_route(
    router,
    "/responses",
    family=Family.OPENAI_RESPONSES,
    provider=OPENAI,
    parse=parse_responses_request,
    upstream_headers=(*UPSTREAM_HEADERS, *CODEX_HEADERS),
)
# Responses and conversations the gateway did not create itself are the provider's: passed through.
for method, path in (
    ("GET", "/responses/{response_id}"),
    ("DELETE", "/responses/{response_id}"),
    ("GET", "/responses/{response_id}/input_items"),
    ("POST", "/responses/input_tokens"),
    ("POST", "/conversations"),
    *((method, "/conversations/{rest:path}") for method in ("GET", "POST", "DELETE")),
):
    add_passthrough_route(router, method, path, provider=OPENAI, headers=UPSTREAM_HEADERS)
