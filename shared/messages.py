"""What crosses a job's Redis Stream (StreamMessage) and the control channel (ControlMessage), defined once
(the job itself: shared/job.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import orjson
from pydantic import BaseModel


class MessageKind(StrEnum):
    OPEN = "open"
    CHUNK = "chunk"
    HEARTBEAT = "heartbeat"
    ERROR = "error"
    RESULT = "result"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """One entry of a job's stream (a plain dataclass: the API reads one per relayed entry, and a pydantic
    model's construction cost more than the rest of the relay's handling of it).

    ``open`` starts the client's SSE stream; ``chunk`` carries one or more rewritten upstream events, their
    lines joined by ``shared.sse.EVENT_SEPARATOR`` (the API adds each event's ``id`` line and end); ``heartbeat`` says the worker is alive; ``error`` carries an HTTP status and an OpenAI-shaped error
    body; ``result`` carries the status and body of a blocking call; ``done`` ends the stream and renders
    nothing (the end marker a client sees is the upstream's own, relayed as a chunk; after an error, none).
    ``headers``: on ``open``, and on ``error`` or ``result`` before it, the upstream's response headers the
    client's HTTP answer carries (``shared.relayed_headers``), as a JSON object in one field.
    """

    kind: MessageKind
    data: bytes = b""
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def to_fields(self) -> list[bytes]:
        """The entry's field-value pairs, flat, as XADD takes them and XREAD returns them."""
        fields = [b"k", self.kind.value.encode()]
        if self.data:
            fields += (b"d", self.data)
        if self.status:
            fields += (b"s", b"%d" % self.status)
        if self.headers:
            fields += (b"h", orjson.dumps(self.headers))
        return fields

    @staticmethod
    def chunk_fields(data: bytes) -> list[bytes]:
        """``to_fields`` of a chunk carrying ``data``, without the message (written per upstream read)."""
        return [b"k", b"chunk", b"d", data]

    @classmethod
    def from_fields(cls, fields: list[bytes]) -> StreamMessage:
        if len(fields) == 4 and fields[2] == b"d" and fields[0] == b"k":  # chunk_fields: most entries
            return cls(KINDS[fields[1]], fields[3])
        return cls.from_mapping(dict(zip(fields[::2], fields[1::2], strict=True)))

    @classmethod
    def from_mapping(cls, values: dict[bytes, bytes]) -> StreamMessage:
        """The message of an entry as redis-py's XRANGE returns it (a dict of its fields); KeyError or
        ValueError for an entry that is not one."""
        return cls(
            KINDS[values[b"k"]],
            values.get(b"d", b""),
            int(values.get(b"s", 0)),
            orjson.loads(values[b"h"]) if b"h" in values else {},
        )


KINDS = {kind.value.encode(): kind for kind in MessageKind}


class ControlMessage(BaseModel):
    """Published by the API on the control channel: cancel one interception (its client has gone)."""

    action: Literal["cancel"]
    interception_id: str

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump())

    @classmethod
    def decode(cls, raw: bytes) -> ControlMessage:
        return cls.model_validate_json(raw)
