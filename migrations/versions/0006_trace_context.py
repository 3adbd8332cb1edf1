"""A run keeps the trace context of the request that created it, so that every claim of the
run (in whichever process) continues that request's trace.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable with no default: adding it rewrites nothing, however large the table.
    op.add_column("generations", sa.Column("trace_context", JSONB, nullable=True))


def downgrade() -> None:
    op.drop_column("generations", "trace_context")
