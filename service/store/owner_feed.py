"""All SQL of following every run of one owner over one stream (``streams/multiplex.py``).

Two reads. The *catch-up* happens once, in one REPEATABLE READ snapshot: its horizon (the
oldest transaction still running: every event of an older one is in the snapshot), which of
the owner's runs to start with (the unfinished ones, and any with an event at or past the
horizon) and how far each one's log reaches in the snapshot. The *owner feed* then reads the
owner's events in the global feed's order, ``(tx_id, generation_id, seq)``, from the horizon
on, and only once no transaction that could commit before them is still running: so it never
steps past an event that commits later (migration 0003).
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from service.store.db import Connection
from service.store.event_log import EVENT_JSON, FeedPosition

# The snapshot's horizon and its xmax: every transaction older than the horizon is in it,
# none from xmax on is.
SELECT_SNAPSHOT_BOUNDS = """
SELECT
    pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon,
    pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xmax
"""

# The runs of owner $1 a catch-up starts with: unfinished, or with an event in a transaction
# at or past $2; oldest first, with their last seq (as of the reading snapshot).
SELECT_LIVE_RUNS = """
SELECT id, last_seq
FROM generations
WHERE owner = $1
  AND (
    status NOT IN ('succeeded', 'failed', 'cancelled')
    OR id IN (SELECT generation_id FROM generation_events WHERE tx_id >= $2)
  )
ORDER BY created_at, id
"""

# One page of a run's events ($1) after seq $2 up to seq $3, at most $4, with transactions.
SELECT_RUN_PAGE = f"""
SELECT tx_id, generation_id, seq, type, {EVENT_JSON} AS json
FROM generation_events
WHERE generation_id = $1
  AND seq > $2
  AND seq <= $3
ORDER BY seq
LIMIT $4
"""

# One page of owner $1's events after feed position ($2, $3, $4), at most $5, once no
# transaction that could commit before them is still running; every row carries that horizon
# (one row with no event when there is none): every owner event below it is in the page, or
# the page is full. One statement, so the horizon and the page are of one snapshot.
SELECT_OWNER_FEED = f"""
WITH horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin
)
SELECT horizon.xmin, page.*
FROM horizon
LEFT JOIN LATERAL (
    SELECT tx_id, generation_id, seq, type, {EVENT_JSON} AS json
    FROM generation_events
    WHERE tx_id < horizon.xmin
      AND (tx_id, generation_id, seq) > ($2, $3, $4)
      AND EXISTS (
        SELECT 1
        FROM generations AS g
        WHERE g.id = generation_events.generation_id
          AND g.owner = $1
      )
    ORDER BY tx_id, generation_id, seq
    LIMIT $5
) AS page ON true
"""

# For each run $1[i]: the last seq of its events at or before feed position ($2, $3, $4)
# (0: none). A reader resumed at that position has been sent exactly those.
SELECT_SEQS_AT = """
SELECT
    run.id,
    coalesce((
        SELECT e.seq
        FROM generation_events AS e
        WHERE e.generation_id = run.id
          AND (e.tx_id, e.generation_id, e.seq) <= ($2, $3, $4)
        ORDER BY e.seq DESC
        LIMIT 1
    ), 0) AS seq
FROM unnest($1::uuid[]) AS run(id)
"""


# The owner of each run $1[i] there is.
SELECT_OWNERS = """
SELECT id, owner
FROM generations
WHERE id = ANY($1::uuid[])
"""


@dataclass(frozen=True, slots=True)
class FeedRow:
    position: FeedPosition
    type: str
    json: str


@dataclass(frozen=True, slots=True)
class SnapshotBounds:
    horizon: int
    xmax: int


async def select_snapshot_bounds(conn: Connection) -> SnapshotBounds:
    row = await conn.fetchrow(SELECT_SNAPSHOT_BOUNDS)
    assert row is not None
    return SnapshotBounds(row["horizon"], row["xmax"])


async def select_live_runs(conn: Connection, owner: str, horizon: int) -> list[tuple[UUID, int]]:
    rows = await conn.fetch(SELECT_LIVE_RUNS, owner, horizon)
    return [(row["id"], row["last_seq"]) for row in rows]


async def select_run_page(
    conn: Connection, generation_id: UUID, after: int, until: int, limit: int
) -> list[FeedRow]:
    return _rows(await conn.fetch(SELECT_RUN_PAGE, generation_id, after, until, limit))


async def select_owner_feed(
    conn: Connection, owner: str, after: FeedPosition, limit: int
) -> tuple[list[FeedRow], int]:
    """A page of the owner feed, and the horizon it was read below."""
    rows = await conn.fetch(
        SELECT_OWNER_FEED, owner, after.tx_id, after.generation_id, after.seq, limit
    )
    return _rows([row for row in rows if row["seq"] is not None]), int(rows[0]["xmin"])


async def select_seqs_at(
    conn: Connection, generation_ids: list[UUID], at: FeedPosition
) -> dict[UUID, int]:
    rows = await conn.fetch(SELECT_SEQS_AT, generation_ids, at.tx_id, at.generation_id, at.seq)
    return {row["id"]: row["seq"] for row in rows}


async def select_owners(conn: Connection, generation_ids: list[UUID]) -> dict[UUID, str]:
    rows = await conn.fetch(SELECT_OWNERS, generation_ids)
    return {row["id"]: row["owner"] for row in rows}


def _rows(rows: list[asyncpg.Record]) -> list[FeedRow]:
    return [
        FeedRow(
            FeedPosition(row["tx_id"], row["generation_id"], row["seq"]), row["type"], row["json"]
        )
        for row in rows
    ]
