"""What a background response's stream says of it: its response object now, whether its job is dead, and where
a stream resumed after a sequence number starts. Pure: no Redis, no clock of its own."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from api.resume import entry_before, entry_order
from shared.background import BackgroundRecord
from shared.messages import MessageKind, StreamMessage
from shared.sse import EVENT_SEPARATOR

Entry = tuple[bytes, StreamMessage]

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "incomplete"})
STREAM_ENDS = frozenset({"response.completed", "response.failed", "response.incomplete"})
SEQUENCE_NUMBER = re.compile(rb'"sequence_number"\s*:\s*([0-9]+)')


class Liveness(Enum):
    RUNNING = "running"  # queued or in progress, its worker (or the queue) still answering for it
    ENDED = "ended"
    DEAD = "dead"  # not ended, and nothing answers for it any more: the API is to end it as failed


@dataclass(frozen=True)
class Seen:
    """What the API read of a background response: its record, whether cancelling it was asked, the first
    and the last few entries of its stream (newest first), and the time (epoch ms)."""

    record: BackgroundRecord
    cancelled: bool
    first: list[Entry]
    last: list[Entry]
    now_ms: int


@dataclass(frozen=True)
class Limits:
    """How long a job may wait for a worker, and stay silent once it has one, in ms."""

    pickup_ms: int
    silence_ms: int


def event_data(event: bytes) -> dict[str, Any] | None:
    data = b"\n".join(line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _events(message: StreamMessage) -> list[bytes]:
    return message.data.split(EVENT_SEPARATOR)


def _opened_response(seen: Seen) -> dict[str, Any]:
    """The response as its first event (``response.created``) shows it, or as the record has it."""
    for _, message in seen.first:
        if message.kind is MessageKind.CHUNK:
            opened = event_data(_events(message)[0])
            if opened is not None and isinstance(opened.get("response"), dict):
                return opened["response"]
    return seen.record.response


def _error(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return {"code": "server_error", "message": body.decode("utf-8", "replace")}
    return {"code": error.get("code") or error.get("type") or "server_error", "message": error.get("message")}


def _ended(seen: Seen) -> dict[str, Any]:
    """The final object of a response whose stream ended: the upstream's last word if it had one."""
    for _, message in seen.last:
        if message.kind is MessageKind.CHUNK:
            final = event_data(_events(message)[-1])
            if (
                final is not None
                and final.get("type") in STREAM_ENDS
                and isinstance(final.get("response"), dict)
            ):
                return final["response"]
            break
        if message.kind is MessageKind.ERROR:
            if seen.cancelled:
                break
            return {**_opened_response(seen), "status": "failed", "error": _error(message.data)}
    status = "cancelled" if seen.cancelled else "failed"
    error = (
        None
        if seen.cancelled
        else {"code": "server_error", "message": "the response ended without an answer"}
    )
    return {**_opened_response(seen), "status": status, "error": error}


def current(seen: Seen, limits: Limits) -> tuple[dict[str, Any], Liveness]:
    """The response object as a client polling it is to see it, and its job's liveness."""
    if not seen.last:  # no worker has taken it yet
        if seen.cancelled:
            return {**seen.record.response, "status": "cancelled"}, Liveness.ENDED
        waited_ms = seen.now_ms - int(seen.record.created_at * 1000)
        dead = waited_ms > limits.pickup_ms + limits.silence_ms
        return seen.record.response, Liveness.DEAD if dead else Liveness.RUNNING
    newest_id, newest = seen.last[0]
    if newest.kind is MessageKind.DONE:
        return _ended(seen), Liveness.ENDED
    silent_ms = seen.now_ms - entry_order(newest_id)[0]
    liveness = Liveness.DEAD if silent_ms > limits.silence_ms else Liveness.RUNNING
    return {**_opened_response(seen), "status": "in_progress"}, liveness


def last_chunk(entries: list[Entry], through: bytes) -> bytes | None:
    """The data of the last chunk among ``entries`` (in order) up to the entry id ``through``; None if none."""
    limit = entry_order(through)
    chunks = [
        message.data
        for entry_id, message in entries
        if message.kind is MessageKind.CHUNK and entry_order(entry_id) <= limit
    ]
    return chunks[-1] if chunks else None


def resume_after(entries: list[Entry], starting_after: int) -> tuple[bytes, tuple[bytes, int]] | None:
    """Where to follow a stream (its entries from the first, in order) for the events after sequence number
    ``starting_after``: the entry id to read after and, if the first event to send is within an entry, that
    entry and how many of its events to leave out (as ``api.resume.resume_point`` says). None: every entry
    given is behind the client; follow after the last."""
    for entry_id, message in entries:
        if message.kind in (MessageKind.HEARTBEAT, MessageKind.OPEN):
            continue
        if message.kind is not MessageKind.CHUNK:
            return entry_before(entry_id), (b"", 0)
        events = _events(message)
        for index, event in enumerate(events):
            number = SEQUENCE_NUMBER.search(event)
            if number is not None and int(number[1]) > starting_after:
                return entry_before(entry_id), (entry_id, index)
    return None
