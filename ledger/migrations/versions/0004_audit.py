"""Audit: each batch's acceptance (a replay re-applies all or nothing), and batches found by when they were answered
(export, purge).

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("acceptance", sa.String(16), nullable=True))
    op.create_index("ix_batches_answered_at", "batches", ["answered_at", "batch_id"])


def downgrade() -> None:
    op.drop_index("ix_batches_answered_at", "batches")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("acceptance")
