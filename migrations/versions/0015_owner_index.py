"""The owner index: ``generation_events_owner_feed_idx`` on ``(owner, tx_id, generation_id,
seq)``, one owner's events in the owner feed's order (store/owner_feed.py).

``CREATE INDEX`` on the partitioned parent builds each partition's index under a SHARE lock
(reads go on, appends wait: 12.9 s over 8.7 M events on these machines; when it runs in one
upgrade with 0014, that migration's ACCESS EXCLUSIVE is still held and reads wait too). A
partition that already has an index of this definition has it adopted instead of built: on a
large log, stop at 0014 (``python -m service migrate --to 0014``), build each partition's
index with ``CREATE INDEX CONCURRENTLY`` (appends and reads go on), then migrate to head
(README, "The owner index").

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "generation_events_owner_feed_idx",
        "generation_events",
        ["owner", "tx_id", "generation_id", "seq"],
    )


def downgrade() -> None:
    op.drop_index("generation_events_owner_feed_idx", "generation_events")
