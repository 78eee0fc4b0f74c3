"""Routes under /openai/v1: chat completions bridged through the queue, models passed through."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.bridge import BodyField, add_bridged_route, parse_conversation
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

UPSTREAM_HEADERS = ("openai-organization", "openai-project", "openai-beta")


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    return parse_conversation(raw, CHAT_FIELDS)


add_bridged_route(
    router, "/chat/completions", family=Family.OPENAI_CHAT, provider=OPENAI, parse=parse_chat_request
)
add_passthrough_route(router, "GET", "/models", provider=OPENAI, headers=UPSTREAM_HEADERS)
add_passthrough_route(router, "GET", "/models/{model_id:path}", provider=OPENAI, headers=UPSTREAM_HEADERS)
