"""A Bedrock InvokeModelWithResponseStream answer read as Anthropic's Messages events: the AWS event stream
(``application/vnd.amazon.eventstream``, binary frames with CRCs) decoded a network read at a time, each
``chunk`` event's payload ``{"bytes": "<base64 of one Messages event>"}`` made the SSE event Anthropic would
have sent, and an ``exception`` frame the UpstreamFailure Anthropic's error would have been."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import StreamReader
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from shared.families import Family, error_body
from shared.sse import data_field
from shared.upstream import GatewayFailure, UpstreamCut, UpstreamFailure
from worker.codec import SseEvent
from worker.sse import StreamEnd

CONTENT_TYPE = "application/vnd.amazon.eventstream"

# The status each of InvokeModelWithResponseStream's stream exceptions stands for (AWS's API reference).
EXCEPTION_STATUS = {
    "validationException": 400,
    "accessDeniedException": 403,
    "resourceNotFoundException": 404,
    "throttlingException": 429,
    "serviceQuotaExceededException": 429,
    "internalServerException": 500,
    "modelStreamErrorException": 500,
    "serviceUnavailableException": 503,
    "modelNotReadyException": 503,
    "modelTimeoutException": 504,
}


async def iter_eventstream_batches(content: StreamReader, is_end: StreamEnd) -> AsyncIterator[list[SseEvent]]:
    """The Messages events completed by each read, as ``worker.sse.iter_sse_batches`` yields SSE events: the
    last batch ends with the end event (``is_end``); a stream that ends before it raises UpstreamCut. A frame
    that fails its CRC or its framing raises GatewayFailure (502); an exception frame its UpstreamFailure,
    after the events before it."""
    frames = EventStreamBuffer()
    async for received in content.iter_any():
        frames.add_data(received)
        batch: list[SseEvent] = []
        try:
            for frame in frames:
                event = messages_event(frame)
                batch.append(event)
                if is_end(event):
                    yield batch
                    return
        except ParserError as exc:
            failure: UpstreamFailure = GatewayFailure(
                502, f"the upstream's event stream is corrupt: {exc}", "upstream_malformed"
            )
        except UpstreamFailure as exc:
            failure = exc
        else:
            if batch:
                yield batch
            continue
        if batch:
            yield batch
        raise failure
    raise UpstreamCut(
        502,
        "the upstream's stream ended before its end marker: the answer is incomplete",
        "upstream_truncated",
    )


def messages_event(frame: EventStreamMessage) -> SseEvent:
    """One frame as the Messages event it carries; UpstreamFailure for an exception or error frame, or a
    chunk that carries no Messages event."""
    headers: dict[str, Any] = frame.headers
    kind = headers.get(":message-type")
    if kind == "exception":
        raise _failure(str(headers.get(":exception-type")), _message(frame.payload))
    if kind == "error":
        raise _failure(str(headers.get(":error-code")), str(headers.get(":error-message", "")))
    try:
        encoded = orjson.loads(frame.payload)["bytes"]
        data = base64.b64decode(encoded, validate=True)
        event = orjson.loads(data)
        name = event["type"]
    except (orjson.JSONDecodeError, binascii.Error, KeyError, TypeError) as exc:
        raise GatewayFailure(
            502, f"the upstream sent a chunk that is no Messages event: {exc!r}", "upstream_malformed"
        ) from None
    return SseEvent(name, data, f"event: {name}\n".encode() + data_field(data))


def _failure(exception: str, message: str) -> UpstreamFailure:
    status = EXCEPTION_STATUS.get(exception, 500)
    said = f"Bedrock {exception}: {message}" if message else f"Bedrock {exception}"
    return UpstreamFailure(status, error_body(Family.ANTHROPIC_MESSAGES, status, said, "", None))


def _message(payload: bytes) -> str:
    try:
        parsed = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", "replace")
    said = parsed.get("message") or parsed.get("Message") if isinstance(parsed, dict) else None
    return said if isinstance(said, str) else ""
