"""Routes under /openai/v1: chat completions bridged through the queue, models passed through."""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import Response
from redis.exceptions import ResponseError

from api.auth import Caller
from api.errors import InvalidRequest
from api.jobs import enqueue_and_follow, new_chat_job
from api.limits import read_body
from api.relay import SSE_HEADERS, SSERelay, answer, json_error
from api.resume import Resume, resume_verdict
from api.state import ApiState, State
from shared import byok
from shared.tracing import tracer
from shared.upstream import UpstreamFailure, bearer

router = APIRouter(prefix="/openai/v1")


# The optional fields the gateway itself reads or rewrites (worker/families/openai_chat.py), with the type each must have.
READ_FIELDS: tuple[tuple[str, type, str], ...] = (
    ("stream", bool, "a boolean"),
    ("stream_options", dict, "an object"),
    ("tools", list, "an array"),
    ("n", int, "an integer"),
)


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
    for name, expected, description in READ_FIELDS:
        value = body.get(name)
        if value is not None and type(value) is not expected:  # orjson makes exact types: True is no int
            raise InvalidRequest(f"'{name}' must be {description}", name)
    if not all(isinstance(tool, dict) for tool in body.get("tools") or ()):
        raise InvalidRequest("every item of 'tools' must be an object", "tools")
    return body


def client_upstream_key(state: ApiState, request: Request) -> str | None:
    """The client's own provider key (bring your own key), if it sent one; InvalidRequest if the gateway
    cannot carry it. Never put in an error message."""
    header = request.headers.get(byok.HEADER)
    if header is None:
        return None
    if state.cipher is None:
        raise InvalidRequest(
            f"this gateway does not accept the client's own upstream key ({byok.HEADER}): "
            "its operator has not set AIBRIDGE_SECRET_KEY",
            byok.HEADER,
        )
    try:
        return byok.parse_header(header)
    except byok.UnusableUpstreamKey as exc:
        raise InvalidRequest(str(exc), byok.HEADER) from None


@router.post("/chat/completions")
async def chat_completions(request: Request, state: State, actor: Caller) -> Response:
    received_at = time.monotonic()
    upstream_key = client_upstream_key(state, request)
    body = parse_chat_request(
        await read_body(request, state.settings.max_body_bytes, state.settings.body_timeout)
    )
    interception_id = str(uuid.uuid4())
    attributes = {
        "interception_id": interception_id,
        "provider": "openai",
        "model": body["model"],
        "streaming": body.get("stream") is True,
    }
    with tracer().start_as_current_span("Intercept.ProcessRequest", attributes=attributes):
        encrypted_key = state.cipher.encrypt(upstream_key) if state.cipher and upstream_key else None
        job = new_chat_job(interception_id, body, request.headers.get("user-agent"), actor, encrypted_key)
        tail = await enqueue_and_follow(state, job)
        response = await answer(state, job, tail, request, received_at)
    response.headers["X-AIBridge-Interception-Id"] = interception_id
    return response


@router.get("/models")
async def models(request: Request, state: State, _: Caller) -> Response:
    upstream_key = client_upstream_key(state, request)
    try:
        status, content_type, body = await state.upstream.get(
            "/models", bearer(upstream_key) if upstream_key else None
        )
    except UpstreamFailure as failure:
        return Response(failure.body, failure.status, media_type="application/json")
    return Response(body, status, media_type=content_type)


EVENT_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})(?:/([0-9]{1,20}))?")  # 2**64 has 20 digits


def resume_point(last_event_id: str | None) -> tuple[bytes, tuple[bytes, int]]:
    """Where to resume after the event ``last_event_id`` (``<entry id>`` or ``<entry id>/<n>``, see
    ``api.relay.sse_events``): the stream entry id to read after, and the entry whose first events the client
    already has, with their count."""
    if last_event_id is None:
        return b"0-0", (b"", 0)
    found = EVENT_ID.fullmatch(last_event_id)
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
    actor: Caller,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """The events of a streamed interception after ``Last-Event-ID`` (all of them without it), then the live
    tail: a client whose connection dropped, or whose API instance died, resumes here on any instance.
    With client keys, only the actor that made the request may: for any other the stream does not exist.
    Events no longer in the stream are a 410, before anything is sent; see ``api.resume``."""
    received_at = time.monotonic()
    try:
        uuid.UUID(interception_id)
    except ValueError:
        raise InvalidRequest("not an interception id", "interception_id") from None
    after, resume_within = resume_point(last_event_id)
    key = state.keys.stream(interception_id)
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.exists(key)
        pipe.get(state.keys.owner(interception_id))
        pipe.xinfo_stream(key)
        exists, owner, info = await pipe.execute(raise_on_error=False)
    gone = not exists or isinstance(info, ResponseError)  # XINFO: "no such key" if it expired meanwhile
    if gone or (actor is not None and owner != actor.id.encode()):
        raise HTTPException(404, "no stream for this interception: unknown, or ended and expired")
    seen = resume_within[0] or (after if last_event_id is not None else None)
    verdict = resume_verdict(info, after, seen)
    if verdict is Resume.BEYOND_END:
        raise InvalidRequest("Last-Event-ID is after the last event of this stream", "Last-Event-ID")
    if verdict is Resume.GONE:
        message = "some of the events this resume asks for are no longer kept; make the request again"
        return json_error(410, message, "invalid_request_error", "events_expired")
    if verdict is Resume.FINISHED:  # the client has every event: an empty stream, ended at once
        headers = {**SSE_HEADERS, "X-AIBridge-Interception-Id": interception_id}
        return Response(b"", 200, headers, media_type=SSERelay.media_type)
    tail = state.streams.follow(key, after=after)
    try:
        async with state.redis.pipeline(transaction=False) as pipe:
            pipe.incr(state.keys.resumed(interception_id))
            pipe.expire(state.keys.resumed(interception_id), int(state.settings.stream_retention))
            state.streams.wake(pipe)
            await pipe.execute()
    except BaseException:
        tail.close()
        raise
    response = SSERelay(state, interception_id, tail, [], received_at, resume_within=resume_within)
    response.headers["X-AIBridge-Interception-Id"] = interception_id
    return response
