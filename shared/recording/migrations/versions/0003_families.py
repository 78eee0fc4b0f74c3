"""API families: each interception's family, cache-write tokens beside cache-read ones, the model's thoughts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-01-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# as of this revision; later revisions must not change what these mean
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("interceptions", sa.Column("family", sa.Text))
    # every interception recorded before this revision was a chat completion (the only family there was)
    op.execute("UPDATE interceptions SET family = 'openai_chat' WHERE provider IS NOT NULL")
    op.add_column(
        "token_usages",
        sa.Column("cache_write_tokens", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.create_table(
        "model_thoughts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "interception_id",
            sa.Text,
            sa.ForeignKey("interceptions.id", ondelete="CASCADE", name="fk_model_thoughts_interception_id"),
            nullable=False,
        ),
        sa.Column("msg_id", sa.Text, nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
    )
    op.create_index("ix_model_thoughts_interception_id", "model_thoughts", ["interception_id"])


def downgrade() -> None:
    op.drop_index("ix_model_thoughts_interception_id", table_name="model_thoughts")
    op.drop_table("model_thoughts")
    with op.batch_alter_table("token_usages") as batch:
        batch.drop_column("cache_write_tokens")
    with op.batch_alter_table("interceptions") as batch:
        batch.drop_column("family")
