"""The global feed: each event records the transaction that stored it.

A reader of all events cannot page by a global serial: transactions commit out of order, so
a reader may see 11 committed before 10 and step past 10 forever. Reading only events whose
transaction is older than every transaction still running (``pg_snapshot_xmin``) and paging
by (transaction, generation, seq) never skips one. ``tx_id`` is the 64-bit
``pg_current_xact_id()`` (it never wraps), kept as bigint so every client can read it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TX_ID = "(pg_current_xact_id())::text::bigint"


def upgrade() -> None:
    # Rows already stored all get this migration's transaction: they committed before it.
    op.add_column(
        "generation_events",
        sa.Column("tx_id", sa.BigInteger, nullable=False, server_default=sa.text(TX_ID)),
    )
    op.create_index(
        "generation_events_feed_idx", "generation_events", ["tx_id", "generation_id", "seq"]
    )


def downgrade() -> None:
    op.drop_index("generation_events_feed_idx", table_name="generation_events")
    op.drop_column("generation_events", "tx_id")
