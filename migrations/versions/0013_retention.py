"""Retention (``python -m service retention``): what was redacted, and what was dropped.

* ``redacted_at`` on events and files: set when retention replaced the event's bulky payload
  (the model's text, a check's output) or the file's content by a marker. Only those rows get
  it, so the chain check knows which links it must take on trust (their text changed after
  they were hashed) and a pass never redacts a row twice.
* ``redacted_at`` on generations: the run's whole log was redacted; a partial index of the
  finished runs still to redact keeps each pass from reading every old run again.
* ``retention_drops``: what retention removed, as ranges of generation ids, so that a reader
  asking for a run that is gone gets ``410 Gone`` with the reason, not a ``404`` that says it
  never existed. A range is a period's partition (every run created in it) or one run (its
  ``owner`` set, so nobody else learns it existed).

Adding nullable columns without a default only touches the catalog, on any size of table.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

STAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.add_column("generation_events", sa.Column("redacted_at", STAMP, nullable=True))
    op.add_column("generated_files", sa.Column("redacted_at", STAMP, nullable=True))
    op.add_column("generations", sa.Column("redacted_at", STAMP, nullable=True))
    op.create_index(
        "generations_unredacted_idx",
        "generations",
        ["finished_at"],
        postgresql_where=sa.text("redacted_at IS NULL AND finished_at IS NOT NULL"),
    )
    op.create_table(
        "retention_drops",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("low", UUID(as_uuid=True), nullable=False),
        sa.Column("high", UUID(as_uuid=True), nullable=False),
        sa.Column("owner", sa.Text, nullable=True),
        sa.Column("dropped_at", STAMP, nullable=False, server_default=sa.text("clock_timestamp()")),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("generations", sa.BigInteger, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.CheckConstraint("low < high", name="retention_drops_range_check"),
    )
    # A miss (404 or 410?) looks here: a run dropped alone by its id, a period by its start.
    op.create_index(
        "retention_drops_run_idx",
        "retention_drops",
        ["low"],
        postgresql_where=sa.text("owner IS NOT NULL"),
    )
    op.create_index(
        "retention_drops_period_idx",
        "retention_drops",
        ["low"],
        postgresql_where=sa.text("owner IS NULL"),
    )


def downgrade() -> None:
    # Without redacted_at, a redacted event reads as an altered one (its chain no longer
    # matches its text) and a redacted file as corrupt: refuse rather than make the log lie.
    redacted = op.get_bind().execute(
        sa.text("SELECT EXISTS (SELECT FROM generations WHERE redacted_at IS NOT NULL)")
    )
    if redacted.scalar():
        raise RuntimeError(
            "retention has redacted runs: a schema before 0013 would read them as tampered "
            "with; downgrading is refused"
        )
    op.drop_table("retention_drops")
    op.drop_index("generations_unredacted_idx", table_name="generations")
    op.drop_column("generations", "redacted_at")
    op.drop_column("generated_files", "redacted_at")
    op.drop_column("generation_events", "redacted_at")
