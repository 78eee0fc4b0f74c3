"""Background responses (Responses ``background: true``): the gateway's own response ids, and the record the
API keeps of each in Redis beside its job's stream (read by any API instance; a worker only shortens its life
when the job ends)."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

RESPONSE_ID = re.compile(r"resp_([0-9a-f]{32})")
RECORD_FIELD = b"record"
CANCELLED_FIELD = b"cancelled"


def response_id_of(interception_id: str) -> str:
    """The response id the client knows a background response by: its interception's, in OpenAI's form."""
    return f"resp_{uuid.UUID(interception_id).hex}"


def interception_of(response_id: str) -> str | None:
    """The interception a response id of the gateway's own stands for; None for any other id (the provider's)."""
    found = RESPONSE_ID.fullmatch(response_id)
    return str(uuid.UUID(found[1])) if found else None


class BackgroundRecord(BaseModel):
    """Who made a background response, and its object as first answered (status ``queued``)."""

    model_config = ConfigDict(frozen=True)

    actor_id: str | None
    created_at: float
    response: dict[str, Any]

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, raw: bytes) -> BackgroundRecord:
        return cls.model_validate_json(raw)


ECHOED_FIELDS = (
    "instructions",
    "max_output_tokens",
    "metadata",
    "parallel_tool_calls",
    "previous_response_id",
    "reasoning",
    "store",
    "temperature",
    "text",
    "tool_choice",
    "tools",
    "top_p",
    "truncation",
    "user",
)


def queued_response(
    response_id: str, body: dict[str, Any], created_at: float | None = None
) -> dict[str, Any]:
    """The response object of a background request just queued: its id, status ``queued``, no output, and
    the request's own settings as OpenAI echoes them."""
    echoed = {name: body[name] for name in ECHOED_FIELDS if name in body}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(created_at if created_at is not None else time.time()),
        "status": "queued",
        "background": True,
        "model": body["model"],
        "output": [],
        "error": None,
        "incomplete_details": None,
        "usage": None,
        "metadata": {},
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        **echoed,
    }
