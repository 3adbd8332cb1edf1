"""Alembic from code, on a database that starts with no schema at all."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from uuid import UUID, uuid4

import asyncpg
from alembic import command

from service.events import NewFile
from service.ids import lowest_v7, new_generation_id
from service.store import event_log, generations, owner_feed, partitions
from service.store.db import Connection, Pool, asyncpg_dsn, create_pool
from service.store.migrate import alembic_config, current_revisions, head_revisions, upgrade
from tests.helpers import DONE, STARTED, new_generation, partitions_holding

TABLES = ("generations", "generation_events", "generated_files", "api_keys")
LOG_TABLES = ["generation_events", "generated_files"]


async def state(url: str) -> tuple[frozenset[str], set[str]]:
    """(the alembic revisions, the service's tables that exist)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        revisions = await current_revisions(conn)
        tables = {t for t in TABLES if await conn.fetchval("SELECT to_regclass($1)::text", t)}
    finally:
        await conn.close()
    return revisions, tables


async def test_upgrade_brings_an_empty_database_to_head(empty_database_url: str) -> None:
    assert await state(empty_database_url) == (frozenset(), set())

    await asyncio.to_thread(upgrade, empty_database_url)

    assert head_revisions()
    assert await state(empty_database_url) == (head_revisions(), set(TABLES))


async def test_downgrade_to_base_then_upgrade_again(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)

    await asyncio.to_thread(command.downgrade, alembic_config(empty_database_url), "base")
    assert await state(empty_database_url) == (frozenset(), set())

    await asyncio.to_thread(upgrade, empty_database_url)
    assert await state(empty_database_url) == (head_revisions(), set(TABLES))


def legacy_id_in(at: datetime) -> UUID:
    """A v4 id whose random leading bits happen to fall in ``at``'s millisecond: one of the
    legacy ids a new period's range catches."""
    return UUID(int=lowest_v7(at).int & ~(0xF << 76) | (0x4 << 76) | random.getrandbits(62))


async def log_rows(conn: Connection) -> dict[str, list[str]]:
    """Every row of the log's tables and every analytics view, as text."""
    found = {}
    for name in (*LOG_TABLES, *await views(conn)):
        rows = await conn.fetch(f"SELECT to_jsonb(t)::text FROM {name} AS t ORDER BY 1")
        found[name] = [row[0] for row in rows]
    return found


async def views(conn: Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT viewname FROM pg_views WHERE schemaname = 'public' ORDER BY viewname"
    )
    return [row[0] for row in rows]


async def kinds(conn: Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT relname, relkind::text FROM pg_class WHERE relname = ANY($1::text[])", LOG_TABLES
    )
    return {row[0]: row[1] for row in rows}


async def test_0012_partitions_a_log_with_legacy_rows_and_downgrades(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    await asyncio.to_thread(command.upgrade, config, "0011")
    pool = await create_pool(empty_database_url, min_size=1, max_size=2)
    try:
        legacy = [await legacy_run(pool, uuid4()) for _ in range(3)]
        caught = await legacy_run(pool, legacy_id_in(datetime.now(UTC)))
        async with pool.acquire() as conn:
            before = await log_rows(conn)
            assert await kinds(conn) == {t: "r" for t in LOG_TABLES}
    finally:
        await pool.close()

    await asyncio.to_thread(command.upgrade, config, "0012")

    pool = await create_pool(empty_database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            assert await kinds(conn) == {t: "p" for t in LOG_TABLES}
            assert await log_rows(conn) == before
            month = f"p{datetime.now(UTC):%Y%m}01"
            for table in LOG_TABLES:
                assert await partitions_holding(conn, table, caught) == {f"{table}_{month}"}
                for run in legacy:
                    assert await partitions_holding(conn, table, run) == {f"{table}_default"}
    finally:
        await pool.close()

    # The service's own reads need the migrations after 0012 too (0013: retention's columns).
    await asyncio.to_thread(command.upgrade, config, "head")

    pool = await create_pool(empty_database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            check = await event_log.check_chains(conn)
            assert (check.generations, check.breaks) == (4, [])
            # The log goes on: a legacy run and a new one append, the feed reads them all.
            fresh = await finished_run(pool, None)
            assert await partitions_holding(conn, "generation_events", fresh) == {
                f"generation_events_{month}"
            }
            feed = await event_log.select_feed(conn, event_log.FeedPosition(), 1000)
            assert len({event.position.generation_id for event in feed}) == 5
            assert (await event_log.check_chains(conn)).breaks == []
            await conn.execute(f"DELETE FROM generated_files WHERE generation_id = '{fresh}'")
            await conn.execute(f"DELETE FROM generation_events WHERE generation_id = '{fresh}'")
            await conn.execute(f"DELETE FROM generations WHERE id = '{fresh}'")
            far = lowest_v7(datetime(2060, 1, 1, tzinfo=UTC))
            await conn.execute(
                partitions.add_fence("generation_events", far, UUID(int=far.int + 1))
            )
    finally:
        await pool.close()

    await asyncio.to_thread(command.downgrade, config, "0011")  # with a fence left: dropped too

    plain = await asyncpg.connect(asyncpg_dsn(empty_database_url))
    try:
        assert await kinds(plain) == {t: "r" for t in LOG_TABLES}
        assert await log_rows(plain) == before
        leftovers = await plain.fetchval(
            "SELECT array_agg(relname) FROM pg_class "
            "WHERE relname ~ '^(generation_events|generated_files)_(default|p[0-9]{8}|partitioned)'"
        )
        assert leftovers is None
        assert not await plain.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conname LIKE '%fence%'"
        )
    finally:
        await plain.close()
    await asyncio.to_thread(command.upgrade, config, "head")
    pool = await create_pool(empty_database_url, min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            assert (await event_log.check_chains(conn)).breaks == []
    finally:
        await pool.close()


# A finished run as a revision before 0014 stores it (today's append writes an event's owner):
# the row, four events, a file, chains computed as an import computes them.
LEGACY_EVENTS = """
INSERT INTO generation_events
    (generation_id, seq, type, status, stage, progress, message, payload, created_at)
SELECT $1, seq, type, status, stage, progress, type, payload::jsonb, clock_timestamp()
FROM (VALUES
    (1, 'generation.queued', 'queued', 'queued', 0.0, '{}'),
    (2, 'generation.started', 'running', 'started', 0.02, '{}'),
    (3, 'file.saved', 'running', 'code', 0.5, '{"path": "app/main.py"}'),
    (4, 'generation.succeeded', 'succeeded', 'done', 1.0, '{"count": 4}')
) AS e(seq, type, status, stage, progress, payload)
"""


async def legacy_run(pool: Pool, generation_id: UUID | None, owner: str = "alice") -> UUID:
    generation_id = generation_id or new_generation_id()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            generations.INSERT_GENERATION, generation_id, owner, "{}", "offline", None, None, "off"
        )
        await conn.execute(LEGACY_EVENTS, generation_id)
        await conn.execute(
            "INSERT INTO generated_files (generation_id, path, content, size, sha256, language, "
            "seq) VALUES ($1, 'app/main.py', 'print()', 7, 'x', 'python', 3)",
            generation_id,
        )
        await conn.execute(
            "UPDATE generations SET status = 'succeeded', stage = 'done', progress = 1, "
            "last_seq = 4, finished_at = now() WHERE id = $1",
            generation_id,
        )
        await event_log.chain_unchained(conn, generation_id)
    return generation_id


async def owner_pages(
    conn: Connection, owner: str, since: int, after: event_log.FeedPosition, limit: int = 3
) -> list[tuple[UUID, int]]:
    """Every event of the owner feed after ``after``, read a page at a time: (run, seq)."""
    read: list[tuple[UUID, int]] = []
    while True:
        rows, _ = await owner_feed.select_owner_feed(conn, owner, after, limit, since)
        if not rows:
            return read
        read += [(row.position.generation_id, row.position.seq) for row in rows]
        after = rows[-1].position


async def test_0014_leaves_old_events_ownerless_and_the_owner_feed_reads_them_the_old_way(
    empty_database_url: str,
) -> None:
    config = alembic_config(empty_database_url)
    await asyncio.to_thread(command.upgrade, config, "0013")
    pool = await create_pool(empty_database_url, min_size=1, max_size=2)
    try:
        old = [await legacy_run(pool, None, owner) for owner in ("alice", "bob", "alice")]
    finally:
        await pool.close()

    # The online path (README, "The owner index"): stop at 0014, build a partition's index
    # CONCURRENTLY, and 0015 adopts it rather than building another.
    await asyncio.to_thread(command.upgrade, config, "0014")
    plain = await asyncpg.connect(asyncpg_dsn(empty_database_url))
    try:
        (home,) = await partitions_holding(plain, "generation_events", old[0])
        built = f"{home}_owner_tx_id_generation_id_seq_idx"
        await plain.execute(
            f"CREATE INDEX CONCURRENTLY {built} ON {home} (owner, tx_id, generation_id, seq)"
        )
        await asyncio.to_thread(command.upgrade, config, "head")
        parent = await plain.fetchval(
            "SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = $1::regclass",
            built,
        )
        assert parent == "generation_events_owner_feed_idx"
        indexes = await plain.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE '%owner%'",
            home,
        )
        assert indexes == 1
    finally:
        await plain.close()

    pool = await create_pool(empty_database_url, min_size=1, max_size=2)
    try:
        new = [await finished_run(pool, None) for _ in range(2)]  # alice's, by today's append
        written_bare = await legacy_run(pool, None, "bob")  # stored without an owner: filled
        async with pool.acquire() as conn:
            owners: dict[UUID, list[str]] = {
                row[0]: row[1]
                for row in await conn.fetch(
                    "SELECT generation_id, array_agg(DISTINCT coalesce(owner, '-')) "
                    "FROM generation_events GROUP BY generation_id"
                )
            }
            assert [owners[run] for run in old] == [["-"]] * 3
            assert [owners[run] for run in new] == [["alice"]] * 2
            assert owners[written_bare] == ["bob"]
            since = await owner_feed.select_owner_since(conn)
            stamps: dict[UUID, int] = {
                row[0]: row[1]
                for row in await conn.fetch(
                    "SELECT generation_id, max(tx_id) FROM generation_events GROUP BY 1"
                )
            }
            assert all(stamps[run] < since for run in old)
            assert all(stamps[run] >= since for run in (*new, written_bare))

            # From the start: below the mark the old way, then on through the index; every
            # event of alice's, old and new, once, in feed order, and none of bob's.
            everything = await owner_pages(conn, "alice", since, event_log.FeedPosition())
            feed = await event_log.select_feed(conn, event_log.FeedPosition(), 1000)
            assert everything == [
                (e.position.generation_id, e.position.seq)
                for e in feed
                if e.position.generation_id in (old[0], old[2], *new)
            ]
            assert len(everything) == 4 * 4  # four runs of four events
            # From the mark on, the index's pages are the old way's.
            mark = event_log.FeedPosition(since)
            fast = await owner_pages(conn, "alice", since, mark)
            assert fast == await owner_pages(conn, "alice", 2**63 - 1, mark)
            assert fast == [(run, seq) for run in new for seq in (1, 2, 3, 4)]
    finally:
        await pool.close()

    await asyncio.to_thread(command.downgrade, config, "0013")
    await asyncio.to_thread(command.upgrade, config, "head")


async def finished_run(pool: Pool, generation_id: UUID | None) -> UUID:
    generation_id = await new_generation(pool, generation_id=generation_id)
    file = NewFile("app/main.py", f"# {generation_id}\n", "python")
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [STARTED, file.saved("code", 0.5)], [file])
        await event_log.append(conn, generation_id, [DONE])
    return generation_id
