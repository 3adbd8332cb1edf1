"""An index of each run's milestones: every event but ``llm.delta``.

A run is mostly model text: a 100,000-event run has a few hundred other events. A snapshot
(docs/CONTRACT.md, "Snapshot + tail") reduces those others, and reading them from the primary
key's range visits every delta's row too: 20 ms for 100,000 events, against 0.9 ms through
this partial index (measured on these machines; BENCHMARKS.md). A delta's append evaluates the
predicate and inserts nothing into it.

Built ``CONCURRENTLY`` (outside the migration's transaction), so a large log keeps taking
appends and reads while it is built; an interrupted build leaves an invalid index that the
next run of this migration drops and builds again.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

INDEX = "generation_events_milestones_idx"


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")  # a failed build's leftover
        op.execute(
            f"CREATE INDEX CONCURRENTLY {INDEX} ON generation_events (generation_id, seq) "
            "WHERE type <> 'llm.delta'"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
