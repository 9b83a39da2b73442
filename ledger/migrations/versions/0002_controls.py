"""Controls across calls and idempotent retries: consumption by account, account keys, recorded requests; the
priors a batch read.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batches", sa.Column("priors", sa.Text, nullable=True))
    op.create_table(
        "consumption",
        sa.Column("account", sa.String(63), primary_key=True),
        sa.Column("group_key", sa.Text, primary_key=True),
        sa.Column("item_kind", sa.String(32), primary_key=True),
        sa.Column("item_id", sa.Text, primary_key=True),
        sa.Column("amount", sa.Text, nullable=False),
        sa.Column("batch_id", sa.String(36), nullable=False),
    )
    op.create_index("ix_consumption_item", "consumption", ["item_kind", "item_id"])
    op.create_table(
        "account_keys",
        sa.Column("account", sa.String(63), primary_key=True),
        sa.Column("group_key", sa.Text, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "requests",
        sa.Column("caller", sa.Text, primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("payload_digest", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.String(36), nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_requests_recorded_at", "requests", ["recorded_at"])


def downgrade() -> None:
    op.drop_table("requests")
    op.drop_table("account_keys")
    op.drop_index("ix_consumption_item", "consumption")
    op.drop_table("consumption")
    op.drop_column("batches", "priors")
