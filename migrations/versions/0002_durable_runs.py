"""Durable runs: idempotency keys on events, and an index for claiming expired leases.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("generation_events", sa.Column("idempotency_key", sa.Text, nullable=True))
    op.create_index(
        "generation_events_idempotency_key_idx",
        "generation_events",
        ["generation_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.drop_index("generations_queued_idx", table_name="generations")
    op.create_index(
        "generations_claimable_idx",
        "generations",
        ["created_at"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("generations_claimable_idx", table_name="generations")
    op.create_index(
        "generations_queued_idx",
        "generations",
        ["created_at"],
        postgresql_where=sa.text("status = 'queued' AND claimed_by IS NULL"),
    )
    op.drop_index("generation_events_idempotency_key_idx", table_name="generation_events")
    op.drop_column("generation_events", "idempotency_key")
