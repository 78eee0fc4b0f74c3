"""Routes under /openai/v1: chat completions bridged through the queue, models passed through."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.jobs import enqueue_and_follow, new_chat_job
from api.relay import answer
from api.state import State
from shared.tracing import tracer
from shared.upstream import UpstreamFailure

router = APIRouter(prefix="/openai/v1")


class InvalidRequest(Exception):
    """A request the gateway refuses before enqueuing anything (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array", "messages")
    if not all(isinstance(message, dict) for message in messages):
        raise InvalidRequest("every item of 'messages' must be an object", "messages")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise InvalidRequest("'stream' must be a boolean", "stream")
    return body


@router.post("/chat/completions")
async def chat_completions(request: Request, state: State) -> Response:
    received_at = time.monotonic()
    body = parse_chat_request(await request.body())
    interception_id = str(uuid.uuid4())
    attributes = {
        "interception_id": interception_id,
        "provider": "openai",
        "model": body["model"],
        "streaming": body.get("stream") is True,
    }
    with tracer().start_as_current_span("Intercept.ProcessRequest", attributes=attributes):
        job = new_chat_job(interception_id, body, request.headers.get("user-agent"))
        tail = await enqueue_and_follow(state, job)
        response = await answer(state, interception_id, tail, request, received_at)
    response.headers["X-AIBridge-Interception-Id"] = interception_id
    return response


@router.get("/models")
async def models(state: State) -> Response:
    try:
        status, content_type, body = await state.upstream.get("/models")
    except UpstreamFailure as failure:
        return Response(failure.body, failure.status, media_type="application/json")
    return Response(body, status, media_type=content_type)
