"""What crosses the queue (ChatJob) and a job's Redis Stream (StreamMessage), defined once."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field


class ChatJob(BaseModel):
    """An interception handed from the API to a worker through the arq queue."""

    model_config = ConfigDict(frozen=True)

    interception_id: str
    provider: Literal["openai"] = "openai"
    body: dict[str, Any]
    streaming: bool
    user_agent: str | None = None
    actor_id: str | None = None
    actor_metadata: dict[str, str] = Field(default_factory=dict)
    trace_context: dict[str, str] = Field(default_factory=dict)  # W3C traceparent of the API's span
    encrypted_upstream_key: str | None = None  # the client's own provider key, encrypted (shared/byok.py)
    enqueued_at: float


class MessageKind(StrEnum):
    OPEN = "open"
    CHUNK = "chunk"
    HEARTBEAT = "heartbeat"
    ERROR = "error"
    RESULT = "result"
    DONE = "done"


class StreamMessage(BaseModel):
    """One entry of a job's stream.

    ``open`` starts the client's SSE stream; ``chunk`` carries one rewritten upstream chunk as raw JSON bytes;
    ``heartbeat`` says the worker is alive; ``error`` carries an HTTP status and an OpenAI-shaped error body;
    ``result`` carries the status and body of a blocking call; ``done`` ends the stream.
    """

    model_config = ConfigDict(frozen=True)

    kind: MessageKind
    data: bytes = b""
    status: int = 0

    def to_fields(self) -> dict[bytes, bytes]:
        fields = {b"k": self.kind.value.encode()}
        if self.data:
            fields[b"d"] = self.data
        if self.status:
            fields[b"s"] = str(self.status).encode()
        return fields

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> StreamMessage:
        return cls.model_construct(
            kind=MessageKind(fields[b"k"].decode()),
            data=fields.get(b"d", b""),
            status=int(fields.get(b"s", 0)),
        )


class ControlMessage(BaseModel):
    """Published by the API on the control channel: cancel one interception (its client has gone)."""

    action: Literal["cancel"]
    interception_id: str

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump())

    @classmethod
    def decode(cls, raw: bytes) -> ControlMessage:
        return cls.model_validate_json(raw)
