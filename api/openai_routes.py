"""Routes under /openai/v1: chat completions bridged through the queue, models passed through."""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import Response

from api.jobs import enqueue_and_follow, new_chat_job
from api.relay import SSERelay, answer
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


EVENT_ID = re.compile(r"^(\d+)-(\d+)(?:/(\d+))?$")


def resume_point(last_event_id: str | None) -> tuple[bytes, tuple[bytes, int]]:
    """Where to resume after the event ``last_event_id`` (``<entry id>`` or ``<entry id>/<n>``, see
    ``api.relay.sse_events``): the stream entry id to read after, and the entry whose first events the client
    already has, with their count."""
    if last_event_id is None:
        return b"0-0", (b"", 0)
    found = EVENT_ID.match(last_event_id)
    if found is None or max(int(found[1]), int(found[2])) >= 2**64:  # beyond what Redis takes as an id
        raise InvalidRequest("Last-Event-ID must be the id of an event of this stream", "Last-Event-ID")
    ms, seq, within = int(found[1]), int(found[2]), found[3]
    if within is None:
        return f"{ms}-{seq}".encode(), (b"", 0)
    before = f"{ms}-{seq - 1}" if seq else f"{max(ms - 1, 0)}-{2**64 - 1 if ms else 0}"
    return before.encode(), (f"{ms}-{seq}".encode(), int(within) + 1)


@router.get("/chat/completions/{interception_id}/events")
async def resume_stream(
    interception_id: str,
    request: Request,
    state: State,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The events of a streamed interception after ``Last-Event-ID`` (all of them without it), then the live
    tail: a client whose connection dropped, or whose API instance died, resumes here on any instance."""
    received_at = time.monotonic()
    try:
        uuid.UUID(interception_id)
    except ValueError:
        raise InvalidRequest("not an interception id", "interception_id") from None
    after, resume_within = resume_point(last_event_id)
    key = state.keys.stream(interception_id)
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.exists(key)
        pipe.incr(state.keys.resumed(interception_id))
        pipe.expire(state.keys.resumed(interception_id), int(state.settings.stream_retention))
        exists, *_ = await pipe.execute()
    if not exists:
        raise HTTPException(404, "no stream for this interception: unknown, or ended and expired")
    tail = state.streams.follow(key, after=after)
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            state.streams.wake(pipe)
            await pipe.execute()
    except BaseException:
        tail.close()
        raise
    response = SSERelay(state, interception_id, tail, [], received_at, resume_within=resume_within)
    response.headers["X-AIBridge-Interception-Id"] = interception_id
    return response
