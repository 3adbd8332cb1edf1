"""Each event carries a chain hash: SHA-256 of the previous event's chain hash (32 zero bytes
before seq 1) followed by the event's JSON text as clients receive it, without its ``chain``
member. The log then shows an edited or deleted event at its seq, and a reader can prove it
saw every event (docs/CONTRACT.md, "Proof of completeness").

The existing events are hashed here, generation by generation in seq order: one pass over the
log, which on a large log is long and writes every row once (docs/operations.md says how to
run it online). Appends compute the hash in their own statement from then on.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# The text that is hashed: an event as clients saw it before this revision (event_log.py's
# EVENT_BODY, frozen here: the hashes stored now depend on exactly this rendering).
BODY = """
'{"generation_id":"' || e.generation_id::text
    || '","seq":' || e.seq::text
    || ',"type":' || to_json(e.type)::text
    || ',"status":' || to_json(e.status)::text
    || ',"stage":' || to_json(e.stage)::text
    || ',"progress":' || e.progress::text
    || ',"message":' || to_json(e.message)::text
    || ',"timestamp":"'
    || to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    || '","data":' || e.payload::text
    || '}'
"""

ZERO = "'\\x" + "00" * 32 + "'::bytea"

BACKFILL = f"""
WITH RECURSIVE chained(generation_id, seq, hash) AS (
    SELECT e.generation_id, e.seq, sha256(decode(repeat('00', 32), 'hex') || convert_to({BODY}, 'UTF8'))
    FROM generation_events AS e
    WHERE e.seq = 1
    UNION ALL
    SELECT e.generation_id, e.seq, sha256(c.hash || convert_to({BODY}, 'UTF8'))
    FROM chained AS c
    JOIN generation_events AS e
        ON e.generation_id = c.generation_id
        AND e.seq = c.seq + 1
)
UPDATE generation_events AS t
SET chain = chained.hash
FROM chained
WHERE t.generation_id = chained.generation_id
  AND t.seq = chained.seq
"""


def upgrade() -> None:
    op.add_column("generation_events", sa.Column("chain", sa.LargeBinary, nullable=True))
    op.execute("SET LOCAL extra_float_digits = 1")  # progress::text as every client read it
    op.execute(BACKFILL)
    # Rows written by hand (not through the append) get the zero hash, which no chain holds:
    # the chain check names them.
    op.alter_column("generation_events", "chain", nullable=False, server_default=sa.text(ZERO))
    op.create_check_constraint(
        "generation_events_chain_check", "generation_events", "octet_length(chain) = 32"
    )


def downgrade() -> None:
    op.drop_constraint("generation_events_chain_check", "generation_events")
    op.drop_column("generation_events", "chain")
