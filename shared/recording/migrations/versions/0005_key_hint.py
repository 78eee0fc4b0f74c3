"""Key pools: the masked hint of the central upstream key an interception's last call used.

Revision ID: 0005
Revises: 0004
Create Date: 2026-01-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("interceptions", sa.Column("key_hint", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("interceptions") as batch:
        batch.drop_column("key_hint")
