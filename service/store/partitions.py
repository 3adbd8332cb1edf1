"""All SQL of the log's partitions: ``generation_events`` and ``generated_files`` are
range-partitioned by generation id, one partition per period (a month, a week or a day).

Generation ids are UUIDv7 (``service/ids.py``): they begin with their creation time, so a
period's ids are one range, from the lowest v7 id of the period's first millisecond (UTC) to
the next period's. A run's events and files all carry its id and land in one partition, the
period the run was created in, and every read of one run prunes to it; retention detaches and
drops whole periods, never half a run.

Each table has a DEFAULT partition for every id outside the created periods: v4 ids from
before UUIDv7 (uniformly random: most sort far above any v7 time) and v7 ids from a clock
ahead of the periods. Creating a period therefore has two costs that this module keeps safe:

* Rows of the new period's range may already sit in the default (a v4 id that chance put
  there, a run from a fast clock). PostgreSQL refuses to add a partition whose range the
  default holds rows of, so the period is made as a standalone table (LIKE the parent:
  defaults, NOT NULL, CHECKs), those rows are moved into it (DELETE ... RETURNING: the default's
  primary key finds them with one index range probe), and then it is ATTACHed, in one
  transaction: readers see the rows in the default or in the period, never in neither.
* ATTACH scans the default to prove it holds no row of the new range, under the ACCESS
  EXCLUSIVE lock it takes on the default: nothing reads or appends to the default meanwhile
  (the global feed reads every partition). A moment on a new database, one sequential pass
  over the legacy rows on a converted one. A CHECK constraint on the default that implies the
  range lets ATTACH skip that scan, so a period that starts in the future, whose range the
  default holds nothing of, is made in three steps: a "fence" CHECK added NOT VALID (no scan),
  VALIDATEd in its own transaction (the scan, under SHARE UPDATE EXCLUSIVE: reads and appends
  go on), then the period attached (no scan) and the fence dropped. The current period, and
  any whose range the default holds rows of, is made in one transaction with the scan under
  the lock (on a converted database: the migration, or the first start after a long pause).

``ensure_partitions`` takes a transaction-level advisory lock around each change of the
catalog (never a session lock: it works through a transaction-mode pooler): processes that
start together create each period once, the later ones find it made.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

import asyncpg

from service.ids import lowest_v7
from service.store.db import Connection

Period = Literal["month", "week", "day"]

# The partitioned tables; each has a DEFAULT partition named ``<table>_default``.
TABLES = ("generation_events", "generated_files")

# Held until the creating transaction ends: one creator at a time, across processes.
LOCK_PARTITIONS = """
SELECT pg_advisory_xact_lock(hashtextextended('genstream.partitions', 0))
"""

# A waiting lock request holds every later one on the table behind it (appends, the global
# feed, the analytics): rather than queue behind a long query, a catalog change gives up
# (LockNotAvailableError) and the next pass tries; periods are made ahead of need. Two waits:
#
# * FIRST_LOCK_TIMEOUT for its first lock on a table, `generations`, taken while it holds no
#   other (so it can be in no lock cycle): 2 s, past deadlock_timeout (1 s by default), so
#   that PostgreSQL's deadlock check, which is what cancels an autovacuum in a lock's way,
#   runs for it.
# * LOCK_TIMEOUT for every later one, taken while it holds `generations`: half of
#   deadlock_timeout, so that in a lock cycle with a run's transaction (one that read the log
#   and now writes `generations`) the catalog change gives up before any deadlock check runs,
#   and is the one to fail: never a run's creation, retry or append.
FIRST_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '2s'"
LOCK_TIMEOUT = """
SELECT set_config(
    'lock_timeout',
    (extract(epoch FROM current_setting('deadlock_timeout')::interval) * 500)::int || 'ms',
    true
)
"""

# Attaching a period adds its foreign key's triggers to generations (SHARE ROW EXCLUSIVE) after
# it has locked the default partition; a run's creation writes generations and then reads the
# log, the other way round. Taken first, the creator's locks come in the runs' order (a
# moment of appends held back, once a period).
LOCK_GENERATIONS = "LOCK TABLE generations IN SHARE ROW EXCLUSIVE MODE"

# The partitions of one table, with their bounds as PostgreSQL prints them
# ("FOR VALUES FROM ('…') TO ('…')" or "DEFAULT"). $1: the parent table.
SELECT_PARTITIONS = """
SELECT
    child.relname AS name,
    pg_get_expr(child.relpartbound, child.oid) AS bound
FROM pg_inherits AS i
JOIN pg_class AS child ON child.oid = i.inhrelid
WHERE i.inhparent = $1::regclass
ORDER BY child.relname
"""

# A period's table, standalone for now: the parent's columns, defaults, NOT NULLs and CHECKs.
CREATE_STANDALONE = """
CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
"""

# The default's rows of the new range, moved into the period's table.
MOVE_FROM_DEFAULT = """
WITH moved AS (
    DELETE FROM {table}_default
    WHERE generation_id >= '{lower}'
      AND generation_id < '{upper}'
    RETURNING *
)
INSERT INTO {name}
SELECT *
FROM moved
"""

# The period's table becomes the range's partition (its indexes and foreign key are made here).
ATTACH_PERIOD = """
ALTER TABLE {table}
ATTACH PARTITION {name}
FOR VALUES FROM ('{lower}') TO ('{upper}')
"""

# Whether the default holds any row of [$1, $2): one probe of its primary key.
SELECT_DEFAULT_HOLDS = """
SELECT EXISTS (
    SELECT
    FROM {table}_default
    WHERE generation_id >= $1
      AND generation_id < $2
)
"""

# A CHECK that keeps a coming period's rows out of the default. Added NOT VALID (no scan; a
# moment of ACCESS EXCLUSIVE), then VALIDATEd: the scan, under SHARE UPDATE EXCLUSIVE, which
# lets reads and appends go on. Once valid it proves to ATTACH that the default holds nothing
# of the range, and ATTACH skips its own scan (PostgreSQL: "This scan ... can be avoided if
# an appropriate CHECK constraint is present"); the period's creation then drops it.
ADD_FENCE = """
ALTER TABLE {table}_default
ADD CONSTRAINT {fence}
CHECK (generation_id < '{lower}' OR generation_id >= '{upper}')
NOT VALID
"""

# Whether the default ($1) has the fence $2 (a run that stopped between the steps left it).
SELECT_FENCE_EXISTS = """
SELECT EXISTS (
    SELECT
    FROM pg_constraint
    WHERE conrelid = $1::regclass
      AND conname = $2
)
"""

VALIDATE_FENCE = """
ALTER TABLE {table}_default
VALIDATE CONSTRAINT {fence}
"""

DROP_FENCE = """
ALTER TABLE {table}_default
DROP CONSTRAINT IF EXISTS {fence}
"""

# How far ahead a period must start to be fenced first: while fenced, a row of its range
# cannot be stored at all (the default refuses it, no partition takes it), so only a range no
# process's clock reaches yet is fenced. (A legacy v4 id imported into a fenced range in that
# window is refused too: about one import in 10^5 for a month's range; it can be retried.)
FENCE_MARGIN = timedelta(days=1)

_BOUND = re.compile(r"FROM \('([0-9a-f-]{36})'\) TO \('([0-9a-f-]{36})'\)")


@dataclass(frozen=True)
class Partition:
    """One partition of ``table``; ``lower``/``upper`` are None for the DEFAULT partition."""

    table: str
    name: str
    lower: UUID | None
    upper: UUID | None

    @property
    def is_default(self) -> bool:
        return self.lower is None

    @property
    def starts(self) -> datetime | None:
        """The first instant of its period (None for the default)."""
        return None if self.lower is None else _instant(self.lower)

    @property
    def ends(self) -> datetime | None:
        """The first instant after its period (None for the default)."""
        return None if self.upper is None else _instant(self.upper)


def _instant(bound: UUID) -> datetime:
    return datetime.fromtimestamp((bound.int >> 80) / 1000, UTC)


def period_start(period: Period, at: datetime) -> datetime:
    """The first instant (UTC) of the period ``at`` falls in; weeks start on Monday."""
    utc = at.astimezone(UTC)
    day = datetime(utc.year, utc.month, utc.day, tzinfo=UTC)
    if period == "month":
        return day.replace(day=1)
    if period == "week":
        return day - timedelta(days=day.weekday())
    return day


def next_period(period: Period, start: datetime) -> datetime:
    if period == "month":
        return start.replace(year=start.year + start.month // 12, month=start.month % 12 + 1)
    return start + timedelta(days=7 if period == "week" else 1)


def wanted_periods(period: Period, ahead: int, now: datetime) -> list[tuple[datetime, datetime]]:
    """The current period and ``ahead`` more, as (start, end) instants."""
    start = period_start(period, now)
    periods = []
    for _ in range(ahead + 1):
        end = next_period(period, start)
        periods.append((start, end))
        start = end
    return periods


def partition_name(table: str, lower: UUID) -> str:
    return f"{table}_p{_instant(lower):%Y%m%d}"


def free_ranges(lower: UUID, upper: UUID, taken: Sequence[Partition]) -> list[tuple[UUID, UUID]]:
    """The parts of [lower, upper) that no existing range partition covers. A changed period
    setting (monthly partitions, then daily) fills gaps around what exists, never overlaps."""
    free = [(lower.int, upper.int)]
    for part in taken:
        if part.lower is None or part.upper is None:
            continue
        low, high = part.lower.int, part.upper.int
        free = [
            piece
            for start, end in free
            for piece in ((start, min(end, low)), (max(start, high), end))
            if piece[0] < piece[1]
        ]
    return [(UUID(int=start), UUID(int=end)) for start, end in free]


async def select_partitions(conn: Connection, table: str) -> list[Partition]:
    """The partitions of ``table`` (one of ``TABLES``), ordered by name: the default, then
    the periods oldest first."""
    rows = await conn.fetch(SELECT_PARTITIONS, table)
    partitions = []
    for row in rows:
        match = _BOUND.search(row["bound"])
        lower, upper = (UUID(match[1]), UUID(match[2])) if match else (None, None)
        partitions.append(Partition(table, row["name"], lower, upper))
    return sorted(partitions, key=lambda p: (not p.is_default, p.lower or UUID(int=0)))


def create_period(table: str, lower: UUID, upper: UUID) -> list[str]:
    """The statements that add the partition for [lower, upper) to ``table``, moving the
    default's rows of that range into it; to run in one transaction (migration 0012 runs
    them too). Bounds are UUIDs, so formatting them in is safe."""
    names = {"name": partition_name(table, lower), "table": table}
    bounds = {"lower": str(lower), "upper": str(upper)}
    return [
        CREATE_STANDALONE.format(**names),
        MOVE_FROM_DEFAULT.format(**names, **bounds),
        ATTACH_PERIOD.format(**names, **bounds),
        DROP_FENCE.format(table=table, fence=fence_name(table, lower)),
    ]


def fence_name(table: str, lower: UUID) -> str:
    return f"{table}_default_fence_p{_instant(lower):%Y%m%d}"


def add_fence(table: str, lower: UUID, upper: UUID) -> str:
    return ADD_FENCE.format(
        table=table, fence=fence_name(table, lower), lower=str(lower), upper=str(upper)
    )


def missing_periods(
    existing: Sequence[Partition], period: Period, ahead: int, now: datetime
) -> list[tuple[UUID, UUID]]:
    """The ranges of a table to create so that ``now``'s period and ``ahead`` more exist."""
    return [
        free
        for start, end in wanted_periods(period, ahead, now)
        for free in free_ranges(lowest_v7(start), lowest_v7(end), existing)
    ]


async def ensure_partitions(
    conn: Connection, period: Period, ahead: int, now: datetime
) -> list[str]:
    """Create the period ``now`` falls in and ``ahead`` more, for both tables, where missing.
    Idempotent, safe to run from every process at once; returns the partitions it created.

    A period that starts at least ``FENCE_MARGIN`` after ``now`` and whose range the default
    holds no row of is created in three steps (see the module's docstring): fence, validate
    (the scan, with reads and appends going on), attach (no scan). Any other is created in one
    transaction that moves the default's rows of its range, with the scan under the lock."""
    created: list[str] = []
    for table in TABLES:
        fenced: list[tuple[UUID, UUID]] = []
        async with conn.transaction():
            await conn.execute(LOCK_PARTITIONS)
            await conn.execute(FIRST_LOCK_TIMEOUT)
            existing = await select_partitions(conn, table)
            plan = [
                (lower, upper, lower >= lowest_v7(now + FENCE_MARGIN) and not holds)
                for lower, upper in missing_periods(existing, period, ahead, now)
                for holds in [
                    await conn.fetchval(SELECT_DEFAULT_HOLDS.format(table=table), lower, upper)
                ]
            ]
            if not all(fence for _lower, _upper, fence in plan):
                await conn.execute(LOCK_GENERATIONS)  # only a period made here needs it
            await conn.execute(LOCK_TIMEOUT)
            for lower, upper, fence_first in plan:
                if fence_first:
                    fence = fence_name(table, lower)
                    if not await conn.fetchval(SELECT_FENCE_EXISTS, f"{table}_default", fence):
                        await conn.execute(add_fence(table, lower, upper))
                    fenced.append((lower, upper))
                else:
                    for statement in create_period(table, lower, upper):
                        await conn.execute(statement)
                    created.append(partition_name(table, lower))
        for lower, _upper in fenced:  # each its own transaction; idempotent, self-serialising
            # UndefinedObject: another process has made the period (and dropped the fence).
            with contextlib.suppress(asyncpg.UndefinedObjectError):
                await conn.execute(
                    VALIDATE_FENCE.format(table=table, fence=fence_name(table, lower))
                )
        if not fenced:
            continue
        async with conn.transaction():
            await conn.execute(LOCK_PARTITIONS)
            await conn.execute(FIRST_LOCK_TIMEOUT)
            await conn.execute(LOCK_GENERATIONS)
            await conn.execute(LOCK_TIMEOUT)
            existing = await select_partitions(conn, table)
            for lower, upper in fenced:
                if free_ranges(lower, upper, existing) == [(lower, upper)]:
                    for statement in create_period(table, lower, upper):
                        await conn.execute(statement)
                    created.append(partition_name(table, lower))
    return created
