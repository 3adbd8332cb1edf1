"""What the log's reads and writes cost at one size: each measurement of case 11 (``log-scale``).

Every function takes a connection (or a pool) to a log already filled (``bench/logfill.py``)
and returns plain numbers; ``bench/cases/logscale.py`` repeats, tabulates and compares them.
The reads are the store's own functions, the ones the service calls (no SQL of the bench's
own but the catalogue queries for sizes).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from uuid import UUID

from bench.genstream import claimed_generations, delta, finished
from service.settings import Settings
from service.store import analytics, event_log, owner_feed
from service.store.db import Connection, Pool, connection
from service.store.event_log import FeedPosition

STREAM_PAGE = int(Settings.model_fields["stream_page_size"].default)
FEED_PAGE = 100  # the feed endpoint's default limit (api/feed.py)

# Every relation holding the log's rows ($1: the tables): a plain table is its own leaf, a
# partitioned one's leaves are its partitions.
LEAVES = """
WITH parent AS (
    SELECT name::regclass AS relid
    FROM unnest($1::text[]) AS name
)
SELECT tree.relid
FROM parent
CROSS JOIN LATERAL pg_partition_tree(parent.relid) AS tree
WHERE tree.isleaf
UNION
SELECT parent.relid
FROM parent
JOIN pg_class AS c ON c.oid = parent.relid
WHERE c.relkind = 'r'
"""

# Each leaf's heap (with TOAST) and indexes.
SELECT_RELATION_SIZES = f"""
WITH leaves AS ({LEAVES})
SELECT
    relid::regclass::text AS relation,
    pg_table_size(relid) AS table_bytes,
    pg_indexes_size(relid) AS index_bytes,
    pg_total_relation_size(relid) AS total_bytes
FROM leaves
ORDER BY 1
"""

# Each index of those relations, by size.
SELECT_INDEX_SIZES = f"""
WITH leaves AS ({LEAVES})
SELECT
    i.indexrelid::regclass::text AS index,
    pg_relation_size(i.indexrelid) AS bytes
FROM leaves
JOIN pg_index AS i ON i.indrelid = leaves.relid
ORDER BY 2 DESC
"""

SELECT_ANALYTICS_VIEWS = """
SELECT viewname
FROM pg_views
WHERE schemaname = current_schema()
  AND viewname LIKE 'analytics\\_%'
ORDER BY viewname
"""

SELECT_FEED_RANGE = "SELECT min(tx_id) AS low, max(tx_id) AS high FROM generation_events"
SELECT_DEFAULT_ROWS = "SELECT count(*) FROM generation_events_default"
LOG_TABLES = ["generation_events", "generated_files", "generations"]


@dataclass(frozen=True, slots=True)
class AppendBurst:
    events: int
    seconds: float
    wal_bytes: int

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def wal_per_event(self) -> float:
        return self.wal_bytes / self.events if self.events else 0.0


async def append_burst(pool: Pool, writers: int, batch: int, seconds: float) -> AppendBurst:
    """``writers`` workers, each appending ``batch`` ``llm.delta`` at a time to its own new
    run through ``event_log.append`` (fenced, with keys: the worker's call), for ``seconds``;
    the WAL written meanwhile (``pg_current_wal_lsn()`` before and after)."""
    claims = await claimed_generations(pool, writers)
    counts = [0] * writers
    stop = asyncio.Event()

    async def write(index: int) -> None:
        claim = claims[index]
        appends = 0
        async with connection(pool) as conn:
            while not stop.is_set():
                keys = [f"{claim.attempt}.{appends}.{i}" for i in range(batch)]
                await event_log.append(
                    conn, claim.id, [delta() for _ in range(batch)], fence=claim.attempt, keys=keys
                )
                appends += 1
                counts[index] += batch

    async with connection(pool) as conn:
        wal_before = await conn.fetchval("SELECT pg_current_wal_lsn()")
    tasks = [asyncio.create_task(write(i)) for i in range(writers)]
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    async with connection(pool) as conn:
        wal = await conn.fetchval("SELECT pg_current_wal_lsn() - $1::pg_lsn", wal_before)
        for claim in claims:
            await event_log.append(conn, claim.id, [finished()], fence=claim.attempt)
    return AppendBurst(sum(counts), elapsed, int(wal))


@dataclass(frozen=True, slots=True)
class StreamRead:
    open_ms: float  # the head, then the first page: what a stream does before its first frame
    catch_up_ms: float  # from the start to the last event of the run
    events: int


async def stream_read(conn: Connection, generation_id: UUID) -> StreamRead:
    """Open a stream of a finished run from ``after=0`` and catch up to its end, with the
    reads the SSE path makes (``streams/follow.py``: ``select_head``; ``streams/hub.py``:
    ``select_events_after`` pages of ``stream_page_size``)."""
    started = time.perf_counter()
    head = await event_log.select_head(conn, generation_id)
    page = await event_log.select_events_after(conn, generation_id, 0, STREAM_PAGE)
    opened = time.perf_counter()
    count = len(page)
    while page and page[-1].seq < head.last_seq:
        page = await event_log.select_events_after(conn, generation_id, page[-1].seq, STREAM_PAGE)
        count += len(page)
    done = time.perf_counter()
    if count != head.last_seq:
        raise RuntimeError(f"read {count} of {head.last_seq} events of {generation_id}")
    return StreamRead((opened - started) * 1e3, (done - started) * 1e3, count)


async def feed_position(conn: Connection, rng: random.Random) -> FeedPosition:
    """A position somewhere in the global feed (a random transaction between the oldest and
    the newest stored)."""
    bounds = await conn.fetchrow(SELECT_FEED_RANGE)
    assert bounds is not None
    return FeedPosition(rng.randint(bounds["low"], bounds["high"]))


async def global_feed_page(conn: Connection, at: FeedPosition) -> tuple[float, int]:
    """One page of the global feed after ``at`` (``event_log.select_feed``): ms, rows."""
    started = time.perf_counter()
    rows = await event_log.select_feed(conn, at, FEED_PAGE)
    return (time.perf_counter() - started) * 1e3, len(rows)


async def owner_feed_page(conn: Connection, owner: str, at: FeedPosition) -> tuple[float, int]:
    """One page of an owner's feed after ``at`` (``owner_feed.select_owner_feed``): ms, rows."""
    since = await owner_feed.select_owner_since(conn)
    started = time.perf_counter()
    rows, _ = await owner_feed.select_owner_feed(conn, owner, at, FEED_PAGE, since)
    return (time.perf_counter() - started) * 1e3, len(rows)


async def analytics_views(conn: Connection) -> list[str]:
    return [row["viewname"] for row in await conn.fetch(SELECT_ANALYTICS_VIEWS)]


async def read_view(conn: Connection, view: str) -> tuple[float, int]:
    """Every row of one analytics view (what a dashboard's unfiltered query costs): ms, rows."""
    started = time.perf_counter()
    rows = await conn.fetch(f"SELECT * FROM {view}")  # names from pg_views
    return (time.perf_counter() - started) * 1e3, len(rows)


async def stats(conn: Connection, owner: str) -> float:
    """``GET /api/stats``'s reads for one owner (``analytics.select_stats``): ms."""
    started = time.perf_counter()
    await analytics.select_stats(conn, owner)
    return (time.perf_counter() - started) * 1e3


async def default_rows(conn: Connection) -> int:
    """The events in ``generation_events``' DEFAULT partition (none, if the fill's runs all
    found their month's partition)."""
    return int(await conn.fetchval(SELECT_DEFAULT_ROWS))


@dataclass(frozen=True, slots=True)
class RelationSize:
    relation: str
    table_bytes: int
    index_bytes: int
    total_bytes: int
    rows: int  # counted: a partition's bytes per row of its own, apart from the mix elsewhere


async def relation_sizes(conn: Connection) -> tuple[list[RelationSize], list[tuple[str, int]]]:
    """Each leaf relation of the log's tables (each partition, if partitioned) with its rows,
    and each index."""
    relations = [
        RelationSize(
            r["relation"],
            r["table_bytes"],
            r["index_bytes"],
            r["total_bytes"],
            int(await conn.fetchval(f"SELECT count(*) FROM {r['relation']}")),  # names: catalog
        )
        for r in await conn.fetch(SELECT_RELATION_SIZES, LOG_TABLES)
    ]
    indexes = [(r["index"], r["bytes"]) for r in await conn.fetch(SELECT_INDEX_SIZES, LOG_TABLES)]
    return relations, indexes
