"""The exception queue: one row per rejected or held item (ledger/exceptions.py).

Revision ID: 0003
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0004"  # after the audit slice (0002 controls, 0004 audit), so a ledger at 0004 upgrades
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exceptions",
        sa.Column("exception_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("item_kind", sa.String(32), nullable=False),
        sa.Column("item_id", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("codes", sa.Text, nullable=False),
        sa.Column("rule_ids", sa.Text, nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("times_seen", sa.Integer, nullable=False),
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("project_id", sa.Text),
        sa.Column("customer_id", sa.Text),
        sa.Column("worker_id", sa.Text),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("resolved_batch_id", sa.String(36)),
        sa.Column("resolved_position", sa.Integer),
        sa.Column("waived_by", sa.Text),
        sa.Column("waived_at", sa.DateTime(timezone=True)),
        sa.Column("waive_reason", sa.Text),
        sa.UniqueConstraint("item_kind", "item_id", name="uq_exceptions_item"),
    )
    op.create_index("ix_exceptions_status_first_seen", "exceptions", ["status", "first_seen"])


def downgrade() -> None:
    op.drop_index("ix_exceptions_status_first_seen", "exceptions")
    op.drop_table("exceptions")
