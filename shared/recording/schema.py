"""The tables of the usage records, as the store queries them.

The migrations under ``migrations/versions`` create them and do not import this module (a migration must
keep describing the schema of its own revision); ``tests/test_recording_store.py`` checks that the two
agree.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so the value is stored as naive UTC text
    (whose order is time order) and read back as UTC. Naive datetimes given to it are taken as UTC.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData()

interceptions = sa.Table(
    "interceptions",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("actor_id", sa.Text),
    sa.Column("actor_metadata", JSONDocument, nullable=False),
    # family, provider, model and streaming are NULL while only the interception's other records are stored
    sa.Column("provider", sa.Text),
    sa.Column("model", sa.Text),
    sa.Column("streaming", sa.Boolean),
    sa.Column("user_agent", sa.Text),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime),
    sa.Column("outcome", sa.Text),
    sa.Column("family", sa.Text),  # shared/families.py Family
    sa.Column("client", sa.Text),  # shared/clients.py Client
    sa.Column("session_id", sa.Text),  # the client's own session id
    sa.Column("key_hint", sa.Text),  # the central key's of the last upstream call (shared/key_pool.py masked)
    sa.Index("ix_interceptions_started_at_id", "started_at", "id"),
    sa.Index("ix_interceptions_actor_id_started_at", "actor_id", "started_at"),
    sa.Index("ix_interceptions_model_started_at", "model", "started_at"),
    sa.Index("ix_interceptions_client_started_at", "client", "started_at"),
)


def _interception_id(table: str) -> sa.Column[str]:
    return sa.Column(
        "interception_id",
        sa.Text,
        sa.ForeignKey("interceptions.id", ondelete="CASCADE", name=f"fk_{table}_interception_id"),
        nullable=False,
        index=True,
    )


token_usages = sa.Table(
    "token_usages",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    _interception_id("token_usages"),
    sa.Column("msg_id", sa.Text, nullable=False),
    sa.Column("input_tokens", sa.BigInteger, nullable=False),
    sa.Column("output_tokens", sa.BigInteger, nullable=False),
    sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
    sa.Column("extra", JSONDocument, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("cache_write_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
)

prompt_usages = sa.Table(
    "prompt_usages",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    _interception_id("prompt_usages"),
    sa.Column("msg_id", sa.Text, nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

tool_usages = sa.Table(
    "tool_usages",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    _interception_id("tool_usages"),
    sa.Column("msg_id", sa.Text, nullable=False),
    sa.Column("tool_call_id", sa.Text, nullable=False),
    sa.Column("server_url", sa.Text),
    sa.Column("tool", sa.Text, nullable=False),
    sa.Column("args", JSONDocument),
    sa.Column("injected", sa.Boolean, nullable=False),
    sa.Column("invocation_error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

model_thoughts = sa.Table(
    "model_thoughts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    _interception_id("model_thoughts"),
    sa.Column("msg_id", sa.Text, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

TABLES = (interceptions, token_usages, prompt_usages, tool_usages, model_thoughts)

client_keys = sa.Table(
    "client_keys",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("key_hash", sa.Text, nullable=False, unique=True),  # SHA-256 hex: the key itself is not stored
    sa.Column("actor_id", sa.Text, nullable=False),
    sa.Column("actor_metadata", JSONDocument, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("revoked_at", UTCDateTime),
)
