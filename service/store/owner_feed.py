"""All SQL of following every run of one owner over one stream (``streams/multiplex.py``).

Two reads. The *catch-up* happens once, in one REPEATABLE READ snapshot: its horizon (the
oldest transaction still running: every event of an older one is in the snapshot), which of
the owner's runs to start with (the unfinished ones, and any with an event at or past the
horizon) and how far each one's log reaches in the snapshot. The *owner feed* then reads the
owner's events in the global feed's order, ``(tx_id, generation_id, seq)``, from the horizon
on, and only once no transaction that could commit before them is still running: so it never
steps past an event that commits later (migration 0003).

Each event carries its run's owner from migration 0014 on, and the owner index
``(owner, tx_id, generation_id, seq)`` serves both reads: a page of one owner's events costs
the same at any size of log and however few of its events are the owner's. Events stored
before that migration have no owner: below its mark (``event_owner_since``) both reads go
through the runs' rows, as they did before, walking everyone's events in feed order.
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

# The first transaction id whose events all carry their owner (migration 0014). None there
# (a hand-emptied table): the highest id, and every read the old way.
SELECT_OWNER_SINCE = """
SELECT coalesce(
    (SELECT tx_id FROM event_owner_since),
    9223372036854775807
)
"""

# The runs of owner $1 a catch-up starts with: unfinished, or with an event in a transaction
# at or past $2; oldest first, with their last seq (as of the reading snapshot). Through the
# owner index: for a horizon at or past the mark.
SELECT_LIVE_RUNS = """
SELECT id, last_seq
FROM generations
WHERE owner = $1
  AND (
    status NOT IN ('succeeded', 'failed', 'cancelled')
    OR id IN (
        SELECT generation_id
        FROM generation_events
        WHERE owner = $1
          AND tx_id >= $2
    )
  )
ORDER BY created_at, id
"""

# The same, for a horizon below the mark: every event from it on, whoever's.
SELECT_LIVE_RUNS_LEGACY = """
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
# the page is full. One statement, so the horizon and the page are of one snapshot. Through
# the owner index, for a position at or past the mark: the conditions are row comparisons
# that lead with the owner, and the order is the index's, so each partition's index range
# is read from the position on and nothing else is (the plan is in a test).
SELECT_OWNER_FEED = f"""
WITH horizon AS (
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS xmin
)
SELECT horizon.xmin, page.*
FROM horizon
LEFT JOIN LATERAL (
    SELECT tx_id, generation_id, seq, type, {EVENT_JSON} AS json
    FROM generation_events
    WHERE (owner, tx_id, generation_id, seq) > ($1, $2, $3, $4)
      AND (owner, tx_id) < ($1, horizon.xmin)
    ORDER BY owner, tx_id, generation_id, seq
    LIMIT $5
) AS page ON true
"""

# The same, for a position below the mark: everyone's events in feed order, each kept if its
# run is the owner's.
SELECT_OWNER_FEED_LEGACY = f"""
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


async def select_owner_since(conn: Connection) -> int:
    """The owner index's mark: from this transaction id on, every event has its owner."""
    since: int = await conn.fetchval(SELECT_OWNER_SINCE)
    return since


async def select_live_runs(
    conn: Connection, owner: str, horizon: int, owner_since: int
) -> list[tuple[UUID, int]]:
    query = SELECT_LIVE_RUNS if horizon >= owner_since else SELECT_LIVE_RUNS_LEGACY
    rows = await conn.fetch(query, owner, horizon)
    return [(row["id"], row["last_seq"]) for row in rows]


async def select_run_page(
    conn: Connection, generation_id: UUID, after: int, until: int, limit: int
) -> list[FeedRow]:
    return _rows(await conn.fetch(SELECT_RUN_PAGE, generation_id, after, until, limit))


async def select_owner_feed(
    conn: Connection, owner: str, after: FeedPosition, limit: int, owner_since: int
) -> tuple[list[FeedRow], int]:
    """A page of the owner feed, and the horizon it was read below. A page from below the
    mark reads the old way all along, also past the mark: it is right everywhere, only slow."""
    query = SELECT_OWNER_FEED if after.tx_id >= owner_since else SELECT_OWNER_FEED_LEGACY
    rows = await conn.fetch(query, owner, after.tx_id, after.generation_id, after.seq, limit)
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
