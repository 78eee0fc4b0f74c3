"""What crosses the queue: one interception, of any API family, and the arq function that runs it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.clients import Client
from shared.families import Family

JOB_FUNCTION = "intercept"
"""The arq function name the API enqueues and the worker registers."""
BACKGROUND_JOB_FUNCTION = "intercept_background"
"""The same function under its own name, with its own timeout: a background response (shared/background.py)."""


class InterceptionJob(BaseModel):
    """An interception handed from the API to a worker through the arq queue."""

    model_config = ConfigDict(frozen=True)

    interception_id: str
    family: Family = Family.OPENAI_CHAT
    provider: str = "openai"
    body: dict[str, Any]
    streaming: bool
    client_headers: dict[str, str] = Field(default_factory=dict)  # the client's headers that go upstream
    user_agent: str | None = None
    client: Client = Client.UNKNOWN  # shared/clients.py, detected by the API from the request's headers
    session_id: str | None = None  # the client's own session id, when it sends one
    actor_id: str | None = None
    actor_metadata: dict[str, str] = Field(default_factory=dict)
    trace_context: dict[str, str] = Field(default_factory=dict)  # W3C traceparent of the API's span
    encrypted_upstream_key: str | None = None  # the client's own provider key, encrypted (shared/byok.py)
    enqueued_at: float
    background: bool = False  # a Responses background response: it runs whatever its client does
    response_id: str | None = None  # the response id the client is shown, when the gateway makes it
    continues_from: str | None = None  # the upstream response the client's previous_response_id stands for

    @property
    def function(self) -> str:
        return BACKGROUND_JOB_FUNCTION if self.background else JOB_FUNCTION
