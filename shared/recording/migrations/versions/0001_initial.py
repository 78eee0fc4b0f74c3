"""Usage records: interceptions and their token, prompt and tool usages.

Revision ID: 0001
Revises:
Create Date: 2025-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# as of this revision; later revisions must not change what these mean
_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_TIME = sa.DateTime(timezone=True)


def _interception_id(table: str) -> sa.Column:
    return sa.Column(
        "interception_id",
        sa.Text,
        sa.ForeignKey("interceptions.id", ondelete="CASCADE", name=f"fk_{table}_interception_id"),
        nullable=False,
    )


def upgrade() -> None:
    op.create_table(
        "interceptions",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("actor_id", sa.Text),
        sa.Column("actor_metadata", _JSON, nullable=False),
        sa.Column("provider", sa.Text),
        sa.Column("model", sa.Text),
        sa.Column("streaming", sa.Boolean),
        sa.Column("user_agent", sa.Text),
        sa.Column("started_at", _TIME, nullable=False),
        sa.Column("ended_at", _TIME),
        sa.Column("outcome", sa.Text),
    )
    op.create_index("ix_interceptions_started_at_id", "interceptions", ["started_at", "id"])
    op.create_index("ix_interceptions_actor_id_started_at", "interceptions", ["actor_id", "started_at"])
    op.create_index("ix_interceptions_model_started_at", "interceptions", ["model", "started_at"])

    op.create_table(
        "token_usages",
        sa.Column("id", sa.String(36), primary_key=True),
        _interception_id("token_usages"),
        sa.Column("msg_id", sa.Text, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
        sa.Column("extra", _JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
    )
    op.create_table(
        "prompt_usages",
        sa.Column("id", sa.String(36), primary_key=True),
        _interception_id("prompt_usages"),
        sa.Column("msg_id", sa.Text, nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
    )
    op.create_table(
        "tool_usages",
        sa.Column("id", sa.String(36), primary_key=True),
        _interception_id("tool_usages"),
        sa.Column("msg_id", sa.Text, nullable=False),
        sa.Column("tool_call_id", sa.Text, nullable=False),
        sa.Column("server_url", sa.Text),
        sa.Column("tool", sa.Text, nullable=False),
        sa.Column("args", _JSON),
        sa.Column("injected", sa.Boolean, nullable=False),
        sa.Column("invocation_error", sa.Text),
        sa.Column("created_at", _TIME, nullable=False),
    )
    for table in ("token_usages", "prompt_usages", "tool_usages"):
        op.create_index(f"ix_{table}_interception_id", table, ["interception_id"])


def downgrade() -> None:
    for table in ("tool_usages", "prompt_usages", "token_usages"):
        op.drop_index(f"ix_{table}_interception_id", table_name=table)
        op.drop_table(table)
    for index in (
        "ix_interceptions_model_started_at",
        "ix_interceptions_actor_id_started_at",
        "ix_interceptions_started_at_id",
    ):
        op.drop_index(index, table_name="interceptions")
    op.drop_table("interceptions")
