"""Writing a batch of usage records in one transaction.

Writing is robust to the order records arrive in and to a batch written twice:

* an interception's row is created by whichever of its records is stored first. ``InterceptionStarted``
  is an upsert that (re)writes the start columns and leaves ``ended_at``/``outcome`` alone; any other
  record of an interception without a row creates a placeholder row (``family``, ``provider``, ``model``
  and ``streaming`` NULL, ``started_at`` the earliest time the batch knows of it) that a later
  ``InterceptionStarted`` completes; ``InterceptionEnded`` then sets ``ended_at`` and ``outcome``.
* a child row (token, prompt, tool usage, model thought) has an id derived from the record's content (a UUIDv5), and is
  inserted with ON CONFLICT DO NOTHING: writing the same record again, in the same batch or a retried
  one, stores it once.
* a batch is one transaction: it is stored whole or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    ModelThought,
    PromptUsage,
    Record,
    TokenUsage,
    ToolUsage,
)
from shared.recording.schema import interceptions, model_thoughts, prompt_usages, token_usages, tool_usages

_ROW_NAMESPACE = uuid.UUID("6f1c1d4e-2b7a-4e53-9a4c-5d0b8e7f3a21")
_INT64 = (-(2**63), 2**63 - 1)
_START_COLUMNS = (
    "actor_id",
    "actor_metadata",
    "family",
    "provider",
    "model",
    "streaming",
    "user_agent",
    "client",
    "session_id",
    "started_at",
)


class InvalidRecord(ValueError):
    """A record that no database could store (e.g. a token count beyond 64 bits)."""


async def write_batch(connection: AsyncConnection, batch: Batch, insert: Callable[[sa.Table], Any]) -> None:
    """Writes ``batch`` on ``connection`` (in its transaction) with ``insert``, the dialect's INSERT that
    takes ON CONFLICT."""
    if batch.starts:
        start = insert(interceptions)
        upsert = start.on_conflict_do_update(
            index_elements=[interceptions.c.id],
            set_={name: start.excluded[name] for name in _START_COLUMNS},
        )
        await connection.execute(upsert, list(batch.starts.values()))
    if placeholders := batch.placeholders():
        placeholder = insert(interceptions).on_conflict_do_nothing(index_elements=[interceptions.c.id])
        await connection.execute(placeholder, placeholders)
    if batch.ends:
        end = (
            sa.update(interceptions)
            .where(interceptions.c.id == sa.bindparam("end_id"))
            .values(
                ended_at=sa.bindparam("end_at", type_=interceptions.c.ended_at.type),
                outcome=sa.bindparam("end_outcome", type_=sa.Text),
                key_hint=sa.bindparam("end_key_hint", type_=sa.Text),
            )
        )
        await connection.execute(end, list(batch.ends.values()))
    for table, rows in batch.children.items():
        if rows:
            child = insert(table).on_conflict_do_nothing(index_elements=[table.c.id])
            await connection.execute(child, list(rows.values()))


class Batch:
    """One batch as rows: the starts, ends, placeholders and children to write, in the batch's order
    (the last of two starts or ends of one interception wins)."""

    def __init__(self, records: Sequence[Record], *, scrub: bool) -> None:
        self._scrub = _scrub_nul if scrub else _same
        self.starts: dict[str, dict[str, Any]] = {}
        self.ends: dict[str, dict[str, Any]] = {}
        self.children: dict[sa.Table, dict[str, dict[str, Any]]] = {
            token_usages: {},
            prompt_usages: {},
            tool_usages: {},
            model_thoughts: {},
        }
        self._first_seen: dict[str, datetime] = {}
        for record in records:
            self._add(record)

    @property
    def empty(self) -> bool:
        return not self._first_seen

    def placeholders(self) -> list[dict[str, Any]]:
        return [
            {"id": interception_id, "actor_metadata": {}, "started_at": seen}
            for interception_id, seen in self._first_seen.items()
            if interception_id not in self.starts
        ]

    def _seen(self, interception_id: str, at: datetime) -> None:
        at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        known = self._first_seen.get(interception_id)
        if known is None or at < known:
            self._first_seen[interception_id] = at

    def _add(self, record: Record) -> None:
        interception_id = self._scrub(record.interception_id)
        match record:
            case InterceptionStarted():
                self.starts[interception_id] = self._scrub(
                    {
                        "id": interception_id,
                        "actor_id": record.actor_id,
                        "actor_metadata": dict(record.actor_metadata),
                        "family": str(record.family),
                        "provider": record.provider,
                        "model": record.model,
                        "streaming": record.streaming,
                        "user_agent": record.user_agent,
                        "client": str(record.client),
                        "session_id": record.session_id,
                        "started_at": record.started_at,
                    }
                )
                self._seen(interception_id, record.started_at)
            case InterceptionEnded():
                self.ends[interception_id] = {
                    "end_id": interception_id,
                    "end_at": record.ended_at,
                    "end_outcome": str(record.outcome),
                    "end_key_hint": record.key_hint,
                }
                self._seen(interception_id, record.ended_at)
            case TokenUsage():
                counts = (record.input, record.output, record.cache_read_input, record.cache_write_input)
                for count in (*counts, *record.extra.values()):
                    if not _INT64[0] <= count <= _INT64[1]:
                        raise InvalidRecord(
                            f"token count {count} of interception {interception_id} is out of range"
                        )
                self._child(
                    token_usages,
                    record,
                    {
                        "input_tokens": record.input,
                        "output_tokens": record.output,
                        "cache_read_tokens": record.cache_read_input,
                        "cache_write_tokens": record.cache_write_input,
                        "extra": dict(record.extra),
                    },
                )
            case PromptUsage():
                self._child(prompt_usages, record, {"prompt": record.prompt})
            case ToolUsage():
                self._child(
                    tool_usages,
                    record,
                    {
                        "tool_call_id": record.tool_call_id,
                        "server_url": record.server_url,
                        "tool": record.tool,
                        "args": record.args,
                        "injected": record.injected,
                        "invocation_error": record.invocation_error,
                    },
                )
            case ModelThought():
                self._child(model_thoughts, record, {"content": record.content})
            case _:
                raise InvalidRecord(f"not a usage record: {type(record).__name__}")

    def _child(
        self,
        table: sa.Table,
        record: TokenUsage | PromptUsage | ToolUsage | ModelThought,
        fields: dict[str, Any],
    ) -> None:
        interception_id = self._scrub(record.interception_id)
        row_id = str(uuid.uuid5(_ROW_NAMESPACE, _canonical(record)))
        self.children[table][row_id] = self._scrub(
            {
                "id": row_id,
                "interception_id": interception_id,
                "msg_id": record.msg_id,
                **fields,
                "created_at": record.created_at,
            }
        )
        self._seen(interception_id, record.created_at)


def _canonical(record: Record) -> str:
    try:
        return orjson.dumps(record.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS).decode()
    except TypeError as exc:  # e.g. tool arguments that are not JSON
        raise InvalidRecord(f"record of interception {record.interception_id} is not JSON: {exc}") from None


def _same(value: Any) -> Any:
    return value


def _scrub_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000: it becomes U+FFFD."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {_scrub_nul(key): _scrub_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_nul(item) for item in value]
    return value
