"""The records of an interception, one definition each (coder/aibridge's recorder records)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.clients import Client
from shared.families import Family


def utcnow() -> datetime:
    return datetime.now(UTC)


class Outcome(StrEnum):
    OK = "ok"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_CUT = "upstream_cut"  # the answer stopped short: the connection broke, or no end marker
    CLIENT_GONE = "client_gone"
    WORKER_ERROR = "worker_error"
    WORKER_LOST = "worker_lost"  # its worker died: another one ended it


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)

    interception_id: str


class InterceptionStarted(_Record):
    kind: Literal["interception"] = "interception"
    actor_id: str | None = None
    actor_metadata: dict[str, str] = Field(default_factory=dict)
    family: Family = Family.OPENAI_CHAT  # the default: the records of workers older than the families
    provider: str
    model: str
    streaming: bool
    user_agent: str | None = None
    client: Client = Client.UNKNOWN  # the default: the records of workers older than client detection
    session_id: str | None = None
    started_at: datetime


class InterceptionEnded(_Record):
    kind: Literal["interception_ended"] = "interception_ended"
    ended_at: datetime = Field(default_factory=utcnow)
    outcome: Outcome
    key_hint: str | None = None  # the central upstream key the last call used, masked (none: the client's)


class TokenUsage(_Record):
    """One upstream round's usage (shared/token_counts.py): ``input`` excludes the tokens read from or
    written to the provider's cache (``cache_read_input``, ``cache_write_input``)."""

    kind: Literal["token_usage"] = "token_usage"
    msg_id: str
    input: int
    output: int
    cache_read_input: int = 0
    cache_write_input: int = 0
    extra: dict[str, int] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=utcnow)


class PromptUsage(_Record):
    """The last user prompt of the interception's request."""

    kind: Literal["prompt_usage"] = "prompt_usage"
    msg_id: str
    prompt: str
    created_at: datetime = Field(default_factory=utcnow)


class ToolUsage(_Record):
    kind: Literal["tool_usage"] = "tool_usage"
    msg_id: str
    tool_call_id: str
    server_url: str | None = None
    tool: str
    args: Any = None
    injected: bool
    invocation_error: str | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ModelThought(_Record):
    """Text the model thought before answering (Anthropic's ``thinking`` blocks), one record per block."""

    kind: Literal["model_thought"] = "model_thought"
    msg_id: str
    content: str
    created_at: datetime = Field(default_factory=utcnow)


Record = Annotated[
    InterceptionStarted | InterceptionEnded | TokenUsage | PromptUsage | ToolUsage | ModelThought,
    Field(discriminator="kind"),
]


class Recorder(Protocol):
    """Takes records without blocking or raising: recording must never slow or break the relay."""

    def record(self, record: Record) -> None: ...


class RecorderGroup:
    """Hands every record to each of its recorders (the database's, the metrics')."""

    def __init__(self, *recorders: Recorder) -> None:
        self._recorders = recorders

    def record(self, record: Record) -> None:
        for recorder in self._recorders:
            recorder.record(record)
