"""Each event carries its run's owner, for the owner index (migration 0015): an owner's
stream (``GET /api/stream``) then pages through that owner's events alone, in time flat in the
log's size, instead of walking everyone's events in the global feed's order and keeping the
owner's (at 10^7 events a light owner's page took 176 ms, up to 710 ms; docs/scaling.md).

* ``owner``, nullable: adding it touches only the catalog, on any size of log. The rows there
  already keep NULL; nothing rewrites them (that would be one write of every row).
* ``generation_events_fill_owner``: a row stored without an owner (an import, a process of
  the previous release still appending during a rolling deploy) takes its run's. The append
  writes it itself, so the trigger costs it one test of ``WHEN``.
* ``event_owner_since``: the first transaction id that cannot have stored an event without its
  owner (the xmax of this migration's snapshot: every transaction that appended before it had
  finished, as the ALTER waited for them; taken in its own statement, so under READ
  COMMITTED, which Alembic's transaction uses). Below it the owner feed reads the old way,
  through the runs' rows; from it on, through the owner index (store/owner_feed.py).

All of it touches only the catalog: a moment of ACCESS EXCLUSIVE on the log at any size. The
index is migration 0015, so that an operator can stop here (``migrate --to 0014``) and build
it online first (README, "The owner index").

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

FILL_OWNER = """
CREATE FUNCTION generation_events_fill_owner() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    SELECT g.owner INTO NEW.owner
    FROM generations AS g
    WHERE g.id = NEW.generation_id;
    RETURN NEW;
END
$$
"""

FILL_OWNER_TRIGGER = """
CREATE TRIGGER generation_events_fill_owner
BEFORE INSERT ON generation_events
FOR EACH ROW
WHEN (NEW.owner IS NULL)
EXECUTE FUNCTION generation_events_fill_owner()
"""

MARK_SINCE = """
INSERT INTO event_owner_since (one, tx_id)
VALUES (true, pg_snapshot_xmax(pg_current_snapshot())::text::bigint)
"""


def upgrade() -> None:
    op.add_column("generation_events", sa.Column("owner", sa.Text, nullable=True))
    op.execute(FILL_OWNER)
    op.execute(FILL_OWNER_TRIGGER)
    op.create_table(
        "event_owner_since",
        sa.Column("one", sa.Boolean, primary_key=True, server_default=sa.true()),
        sa.Column("tx_id", sa.BigInteger, nullable=False),
        sa.CheckConstraint("one", name="event_owner_since_one_check"),
    )
    op.execute(MARK_SINCE)


def downgrade() -> None:
    op.drop_table("event_owner_since")
    op.execute("DROP TRIGGER generation_events_fill_owner ON generation_events")
    op.execute("DROP FUNCTION generation_events_fill_owner()")
    op.drop_column("generation_events", "owner")
