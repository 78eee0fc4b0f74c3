"""The API families the gateway speaks, each a wire format of its own (see ../shared/DESIGN.md's table), and
the shape of an error in each: as a JSON body, and as an event of a stream that already started."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import orjson

from shared.errors import error_object, normalize_error_body
from shared.sse import EVENT_SEPARATOR, data_field


class Family(StrEnum):
    OPENAI_CHAT = "openai_chat"  # POST /openai/v1/chat/completions
    ANTHROPIC_MESSAGES = "anthropic_messages"  # POST /anthropic/v1/messages
    OPENAI_RESPONSES = "openai_responses"  # POST /openai/v1/responses


# Anthropic's error types by HTTP status (https://docs.anthropic.com/en/api/errors); others: by class
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


ANTHROPIC_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
"""The status an Anthropic error type stands for (an ``error`` event in a stream carries no status)."""


def anthropic_error_type(status: int) -> str:
    return ANTHROPIC_ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def error_body(
    family: Family, status: int, message: str, type_: str, code: str | None, param: str | None = None
) -> bytes:
    """The gateway's own error in ``family``'s shape. OpenAI's carries ``type_``, ``code`` and ``param`` (the
    request field at fault, or null); Anthropic's has neither code nor param: its type is the one Anthropic
    gives ``status``."""
    if family is Family.ANTHROPIC_MESSAGES:
        return _anthropic(status, message)
    body = error_object(message, type_, code)
    body["error"]["param"] = param
    return orjson.dumps(body)


def normalize_error(family: Family, status: int, raw: bytes) -> bytes:
    """An upstream's error answer (``status``, ``raw`` body) in ``family``'s shape: kept as is when it is
    already so, otherwise a body of that shape carrying what the upstream said."""
    fallback = f"upstream answered {status}"
    if family is not Family.ANTHROPIC_MESSAGES:
        return normalize_error_body(raw, fallback)
    parsed = _json(raw)
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(error, dict):
        said, type_ = error.get("message"), error.get("type")
        if parsed.get("type") == "error" and isinstance(said, str) and isinstance(type_, str):
            return raw
        message = said if isinstance(said, str) and said else fallback
        if type_ in ANTHROPIC_STATUS_BY_TYPE:
            return _anthropic_body(type_, message)
        return _anthropic(status, message)
    text = raw[:512].decode("utf-8", "replace").strip()
    return _anthropic(status, f"{fallback}: {text}" if text else fallback)


def error_event(family: Family, body: bytes, after: bytes = b"") -> bytes:
    """An error ``body`` as the lines of one event of ``family``'s stream (no blank line, no ``id:``):
    chat's ``data: <body>``, Anthropic's ``event: error`` then ``data: <body>``, Responses' ``event: error``
    then ``data: {"type": "error", "code", "message", "param", "sequence_number"}``. ``after``: the data
    of the last chunk the client got, which a Responses error event is numbered on from, unless the body
    carries its ``sequence_number`` beside its error (when the worker knew it)."""
    if family is Family.ANTHROPIC_MESSAGES:
        return b"event: error\n" + data_field(body)
    if family is Family.OPENAI_RESPONSES:
        return b"event: error\n" + data_field(responses_error_data(body, after))
    return data_field(body)


def responses_error_data(body: bytes, after: bytes = b"") -> bytes:
    """An OpenAI-shaped error body as the data of a Responses ``error`` event, numbered as the body says or
    on from the events in ``after`` (a chunk's data)."""
    parsed = _json(body)
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        error = {"code": None, "message": body.decode("utf-8", "replace"), "param": None}
    said = parsed.get("sequence_number") if isinstance(parsed, dict) else None
    return orjson.dumps(
        {
            "type": "error",
            "code": error.get("code"),
            "message": error.get("message"),
            "param": error.get("param"),
            "sequence_number": said if _is_int(said) else next_sequence_number(after),
        }
    )


def next_sequence_number(chunk: bytes) -> int:
    """The ``sequence_number`` after the last one among the Responses events of ``chunk`` (their lines,
    joined by ``shared.sse.EVENT_SEPARATOR``); 0 if none has one."""
    for event in reversed(chunk.split(EVENT_SEPARATOR)):
        data = b"\n".join(
            line.removeprefix(b"data:").removeprefix(b" ")
            for line in event.split(b"\n")
            if line.startswith(b"data:")
        )
        parsed = _json(data)
        number = parsed.get("sequence_number") if isinstance(parsed, dict) else None
        if _is_int(number):
            return number + 1
    return 0


def _anthropic(status: int, message: str) -> bytes:
    return _anthropic_body(anthropic_error_type(status), message)


def _anthropic_body(type_: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": type_, "message": message}})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
