"""The bridged routes of every API family, made by one factory: parse the body, make the job, queue it, answer
from its stream (and resume that stream after ``Last-Event-ID``). A family brings only its parsing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response

from api.auth import Caller
from api.background import start_background
from api.errors import GatewayError, InvalidRequest
from api.jobs import enqueue_and_follow, new_job
from api.limits import read_body
from api.relay import answer
from api.resume import resume_stream
from api.state import ApiState, State
from shared import byok
from shared.clients import detect_client
from shared.families import Family
from shared.tracing import tracer

Parse = Callable[[bytes], dict[str, Any]]


@dataclass(frozen=True)
class BodyField:
    """A field of the request body the gateway itself reads or rewrites, with the JSON types it may have."""

    name: str
    types: tuple[type, ...]
    description: str  # of the types, for the error: "a boolean"
    required: bool = False
    of_objects: bool = False  # an array whose every item must be an object


def parse_conversation(raw: bytes, fields: Iterable[BodyField]) -> dict[str, Any]:
    """The body of a bridged chat-like request: as ``parse_request`` says, with a non-empty array of objects
    ``messages``."""
    body = parse_request(raw, ())
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array", "messages")
    if not all(isinstance(message, dict) for message in messages):
        raise InvalidRequest("every item of 'messages' must be an object", "messages")
    check_fields(body, fields)
    return body


def parse_request(raw: bytes, fields: Iterable[BodyField]) -> dict[str, Any]:
    """The body of a bridged request: a JSON object with a non-empty string ``model`` and ``fields`` as they
    say; InvalidRequest naming the field at fault otherwise."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a non-empty string", "model")
    check_fields(body, fields)
    return body


def check_fields(body: dict[str, Any], fields: Iterable[BodyField]) -> None:
    for field in fields:
        value = body.get(field.name)
        if value is None:
            if field.required:
                raise InvalidRequest(
                    f"'{field.name}' is required and must be {field.description}", field.name
                )
            continue
        if type(value) not in field.types:  # orjson makes exact types: True is no int
            raise InvalidRequest(f"'{field.name}' must be {field.description}", field.name)
        if field.of_objects and not all(isinstance(item, dict) for item in value):
            raise InvalidRequest(f"every item of '{field.name}' must be an object", field.name)


def client_upstream_key(state: ApiState, request: Request, provider: str) -> str | None:
    """The client's own provider key (bring your own key), if it sent one; InvalidRequest if the gateway
    cannot carry it. A provider called with each user's own token (Copilot's) takes it from
    ``Authorization`` too, and refuses a request without one. Never put in an error message."""
    header = request.headers.get(byok.HEADER)
    if header is not None and not state.providers[provider].takes_keys:
        message = (
            f"the provider '{provider}' signs with the gateway's own credentials: it takes no {byok.HEADER}"
        )
        raise InvalidRequest(message, byok.HEADER)
    if state.providers[provider].takes_user_token:
        header = header or request.headers.get("authorization")
        if header is None:
            raise MissingUserToken(provider)
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


class MissingUserToken(GatewayError):
    """A request to a provider that takes each user's own token (GitHub Copilot) came without one (401)."""

    def __init__(self, provider: str) -> None:
        message = (
            f"the provider '{provider}' is called with your own GitHub Copilot token: send it as "
            "'Authorization: Bearer <token>' (and, with gateway keys, the gateway key as 'X-Api-Key')"
        )
        super().__init__(401, message, "invalid_request_error", "missing_provider_token")


def add_bridged_route(
    router: APIRouter,
    path: str,
    *,
    family: Family,
    provider: str,
    parse: Parse,
    upstream_headers: Iterable[str] = (),
    background: bool = False,
) -> None:
    """``POST <path>`` bridged through the queue, and ``GET <path>/{interception_id}/events`` resuming its
    streams. ``parse`` turns the raw body into the job's (InvalidRequest if it cannot); the request headers
    named in ``upstream_headers`` (lower case) go upstream with the job; with ``background``, a body with
    ``background: true`` is a background response (api/background.py)."""
    forwarded = tuple(upstream_headers)

    async def intercept(request: Request, state: State, actor: Caller) -> Response:
        received_at = time.monotonic()
        upstream_key = client_upstream_key(state, request, provider)
        body = parse(await read_body(request, state.settings.max_body_bytes, state.settings.body_timeout))
        interception_id = str(uuid.uuid4())
        attributes = {
            "interception_id": interception_id,
            "family": str(family),
            "provider": provider,
            "model": body["model"],
            "streaming": body.get("stream") is True,
        }
        with tracer().start_as_current_span("Intercept.ProcessRequest", attributes=attributes):
            encrypted_key = state.cipher.encrypt(upstream_key) if state.cipher and upstream_key else None
            job = new_job(
                interception_id,
                body,
                request.headers.get("user-agent"),
                actor,
                encrypted_key,
                family=family,
                provider=provider,
                client_headers={name: request.headers[name] for name in forwarded if name in request.headers},
                identity=detect_client(request.headers),
                background=background and body.get("background") is True,
            )
            if job.background:
                response = await start_background(state, job, received_at)
            else:
                tail = await enqueue_and_follow(state, job)
                response = await answer(state, job, tail, request, received_at)
        response.headers["X-AIBridge-Interception-Id"] = interception_id
        return response

    async def resume(
        interception_id: str,
        request: Request,
        state: State,
        actor: Caller,
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Response:
        """The events of a streamed interception after ``Last-Event-ID``, then the live tail (api/resume.py)."""
        return await resume_stream(state, family, interception_id, request, actor, last_event_id)

    router.add_api_route(path, intercept, methods=["POST"], name=f"{family}")
    router.add_api_route(
        f"{path}/{{interception_id}}/events", resume, methods=["GET"], name=f"{family}_resume"
    )
