"""Client detection: each interception's client (shared/clients.py) and the client's session id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("interceptions", sa.Column("client", sa.Text))
    op.add_column("interceptions", sa.Column("session_id", sa.Text))
    # no interception recorded before this revision had its client detected
    op.execute("UPDATE interceptions SET client = 'unknown' WHERE provider IS NOT NULL")
    op.create_index("ix_interceptions_client_started_at", "interceptions", ["client", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_interceptions_client_started_at", table_name="interceptions")
    with op.batch_alter_table("interceptions") as batch:
        batch.drop_column("session_id")
        batch.drop_column("client")
