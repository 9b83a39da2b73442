"""The first ledger: batches, decisions, ruleset sources.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.String(36), primary_key=True),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("correlation_id", sa.Text, nullable=False),
        sa.Column("caller", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("item_kind", sa.String(32), nullable=False),
        sa.Column("rulesets", sa.Text, nullable=False),
        sa.Column("snapshot_id", sa.Text, nullable=False),
        sa.Column("engine_version", sa.Text, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("enriched", sa.Integer, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
    )
    op.create_table(
        "decisions",
        sa.Column("batch_id", sa.String(36), sa.ForeignKey("batches.batch_id"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("item_kind", sa.String(32), nullable=False),
        sa.Column("item_id", sa.Text, nullable=False),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reasons", sa.Text, nullable=False),
        sa.Column("enrichments", sa.Text, nullable=False),
    )
    op.create_index("ix_decisions_item", "decisions", ["item_id", "item_kind"])
    op.create_table(
        "ruleset_sources",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("ruleset_id", sa.Text, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("ruleset_sources")
    op.drop_index("ix_decisions_item", "decisions")
    op.drop_table("decisions")
    op.drop_table("batches")
