"""A run keeps how far its code is to be verified (``off``, ``compile`` or ``tests``), chosen
by its request, so that whichever worker claims or resumes it verifies the same way.

Runs created before this revision were never verified: they get ``off``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A constant default is stored in the catalog (PostgreSQL 11+): no rewrite of the table.
    op.add_column("generations", sa.Column("verify", sa.Text, nullable=False, server_default="off"))
    # Added NOT VALID (checks new rows; takes the table's lock only for a moment), then
    # validated: the scan of the existing rows holds a lock that lets reads and writes go on.
    op.execute(
        "ALTER TABLE generations ADD CONSTRAINT generations_verify_check "
        "CHECK (verify IN ('off', 'compile', 'tests')) NOT VALID"
    )
    op.execute("ALTER TABLE generations VALIDATE CONSTRAINT generations_verify_check")


def downgrade() -> None:
    op.drop_constraint("generations_verify_check", "generations")
    op.drop_column("generations", "verify")
