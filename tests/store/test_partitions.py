"""The log's partitions by period (store/partitions.py): created ahead, idempotent, legacy rows
moved into a new period, and every read of one run pruned to its one partition."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from service.events import NewFile
from service.ids import lowest_v7, new_generation_id, v7_at
from service.store import event_log, generations, owner_feed, partitions, snapshots, transfer
from service.store.db import Connection, Pool
from service.store.event_log import _append_parameters
from service.store.partitions import ensure_partitions, select_partitions
from tests.helpers import delta, new_generation, partitions_holding, wait_until

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def rows_of(conn: Connection, generation_id: UUID) -> tuple[list[str], list[str]]:
    """Every column of the run's events and files, as text: what must survive a move."""
    events = await conn.fetch(
        "SELECT to_jsonb(e)::text FROM generation_events AS e WHERE generation_id = $1 "
        "ORDER BY seq",
        generation_id,
    )
    files = await conn.fetch(
        "SELECT to_jsonb(f)::text FROM generated_files AS f WHERE generation_id = $1 ORDER BY path",
        generation_id,
    )
    return [r[0] for r in events], [r[0] for r in files]


async def run_with_a_file(pool: Pool, generation_id: UUID | None = None) -> UUID:
    generation_id = await new_generation(pool, generation_id=generation_id)
    file = NewFile("app/main.py", "print('hi')\n", "python")
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [delta(1), file.saved("code", 0.5)], [file])
    return generation_id


def test_periods_start_at_utc_midnight_of_their_first_day() -> None:
    at = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    assert partitions.wanted_periods("month", 1, at) == [
        (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
        (datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC)),
    ]
    assert partitions.period_start("week", at) == datetime(2026, 12, 28, tzinfo=UTC)  # Monday
    assert partitions.period_start("day", at) == datetime(2026, 12, 31, tzinfo=UTC)
    assert lowest_v7(datetime(2026, 12, 1, tzinfo=UTC)) == UUID(
        "01a22ee6-b000-7000-8000-000000000000"
    )


async def test_the_current_and_ahead_periods_are_created_once(pool: Pool) -> None:
    far = NOW + timedelta(days=3650)  # beyond what the template database was given
    async with pool.acquire() as conn:
        created = await ensure_partitions(conn, "month", 2, far)
        assert created == [
            f"{table}_p{month}"
            for table in partitions.TABLES
            for month in ("20361101", "20361201", "20370101")
        ]
        assert await ensure_partitions(conn, "month", 2, far) == []
        events = await select_partitions(conn, "generation_events")
    assert events[0].name == "generation_events_default"
    assert events[0].is_default
    december = next(p for p in events if p.name == "generation_events_p20361201")
    assert (december.starts, december.ends) == (
        datetime(2036, 12, 1, tzinfo=UTC),
        datetime(2037, 1, 1, tzinfo=UTC),
    )


async def test_two_processes_at_once_create_each_period_once(pool: Pool) -> None:
    far = NOW + timedelta(days=4000)

    async def ensure() -> list[str]:
        async with pool.acquire() as conn:
            return await ensure_partitions(conn, "week", 3, far)

    first, second = await asyncio.gather(ensure(), ensure())
    assert len(first) + len(second) == 8
    assert len(set(first) | set(second)) == 8


async def created_with_messages(conn: Connection, now: datetime) -> tuple[list[str], list[str]]:
    """ensure_partitions' result, and what PostgreSQL said about the default's scans."""
    said: list[str] = []

    def listen(_conn: object, message: object) -> None:
        said.append(str(message))

    conn.add_log_listener(listen)
    await conn.execute("SET client_min_messages = debug1")
    try:
        created = await ensure_partitions(conn, "month", 1, now)
    finally:
        await conn.execute("RESET client_min_messages")
        conn.remove_log_listener(listen)
    return created, [m for m in said if "default partition" in m]


async def test_a_future_period_is_fenced_so_attach_does_not_scan_the_default(pool: Pool) -> None:
    await run_with_a_file(pool, uuid4())  # something in the default to scan
    async with pool.acquire() as conn:
        # December (the period "now" is in) is made in one go; January, ahead, is fenced.
        created, said = await created_with_messages(conn, datetime(2049, 12, 15, tzinfo=UTC))
        assert created == [
            "generation_events_p20491201",
            "generation_events_p20500101",
            "generated_files_p20491201",
            "generated_files_p20500101",
        ]
        assert len(said) == 2, said  # January's, once per table
        assert all("is implied by existing constraints" in m for m in said), said
        fences = await conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conname LIKE '%fence%'"
        )
        assert fences == 0


async def test_a_fence_left_by_a_stopped_run_is_taken_up(pool: Pool) -> None:
    lower, upper = (
        lowest_v7(datetime(2051, 1, 1, tzinfo=UTC)),
        lowest_v7(datetime(2051, 2, 1, tzinfo=UTC)),
    )
    async with pool.acquire() as conn:
        await conn.execute(partitions.add_fence("generation_events", lower, upper))
        created = await ensure_partitions(
            conn, "month", 0, datetime(2050, 12, 1, tzinfo=UTC) + timedelta(days=31)
        )
        assert "generation_events_p20510101" in created
        assert not await conn.fetchval(
            "SELECT count(*) FROM pg_constraint WHERE conname LIKE '%fence%'"
        )


async def test_a_period_is_not_made_behind_a_long_reader_of_the_log(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Queued behind the reader, the catalog change would hold every later reader of the log
    # back: it gives up instead, and the next hourly pass makes the period.
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "SET LOCAL lock_timeout = '200ms'")
    later = datetime(2031, 3, 5, tzinfo=UTC)
    async with pool.acquire() as reader, reader.transaction():
        await reader.fetchval("SELECT count(*) FROM generation_events")
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.LockNotAvailableError):
                await ensure_partitions(conn, "month", 0, later)
            reads = await conn.fetchval("SELECT count(*) FROM generation_events")  # not held
    assert reads == 0
    async with pool.acquire() as conn:
        assert await ensure_partitions(conn, "month", 0, later) == [
            "generation_events_p20310301",
            "generated_files_p20310301",
        ]


async def test_a_period_waits_out_a_vacuum_of_generations_past_the_deadlock_check(
    pool: Pool,
) -> None:
    # VACUUM's lock (SHARE UPDATE EXCLUSIVE) is in the way of the creator's first lock; an
    # autovacuum would be cancelled by the deadlock check that runs after deadlock_timeout
    # (1 s), so that first wait, holding nothing else, outlasts it (2 s). A plain transaction
    # stands in for the vacuum here, held past the later locks' 0.5 s and then let go.
    later = datetime(2032, 7, 5, tzinfo=UTC)
    async with pool.acquire() as vacuum, pool.acquire() as watcher:
        async with vacuum.transaction():
            await vacuum.execute("LOCK TABLE generations IN SHARE UPDATE EXCLUSIVE MODE")

            async def creating() -> list[str]:
                async with pool.acquire() as conn:
                    return await ensure_partitions(conn, "month", 0, later)

            task = asyncio.create_task(creating())

            async def waiting() -> bool:
                return bool(
                    await watcher.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted "
                        "AND relation = 'generations'::regclass"
                    )
                )

            await wait_until(waiting, "the creator waits for generations")
            await asyncio.sleep(0.8)  # past half of deadlock_timeout, within the first wait
        assert await task == ["generation_events_p20320701", "generated_files_p20320701"]


async def test_a_changed_period_fills_around_what_exists(pool: Pool) -> None:
    far = datetime(2040, 3, 1, tzinfo=UTC)
    async with pool.acquire() as conn:
        await ensure_partitions(conn, "month", 0, far)  # March 2040
        created = await ensure_partitions(conn, "week", 1, datetime(2040, 3, 29, tzinfo=UTC))
    # The week of March 26 overlaps March: only its April part is made, then the next week.
    assert created == [
        f"{table}_p{day}" for table in partitions.TABLES for day in ("20400401", "20400402")
    ]


async def test_a_v7_id_lands_in_its_period_and_a_v4_id_in_the_default(pool: Pool) -> None:
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        await ensure_partitions(conn, "month", 3, now)
    current = await run_with_a_file(pool, new_generation_id())
    legacy = await run_with_a_file(pool, uuid4())
    async with pool.acquire() as conn:
        month = f"p{now:%Y%m}01"
        assert await partitions_holding(conn, "generation_events", current) == {
            f"generation_events_{month}"
        }
        assert await partitions_holding(conn, "generated_files", current) == {
            f"generated_files_{month}"
        }
        assert await partitions_holding(conn, "generation_events", legacy) == {
            "generation_events_default"
        }
        assert await partitions_holding(conn, "generated_files", legacy) == {
            "generated_files_default"
        }


async def test_default_rows_in_a_new_periods_range_move_into_it_unchanged(pool: Pool) -> None:
    # A run from a clock ahead of the partitions (or a v4 id that chance put in this range).
    future = datetime(2045, 6, 15, tzinfo=UTC)
    ahead = await run_with_a_file(pool, v7_at(future))
    async with pool.acquire() as conn:
        assert await partitions_holding(conn, "generation_events", ahead) == {
            "generation_events_default"
        }
        before = await rows_of(conn, ahead)
        created = await ensure_partitions(conn, "month", 0, future)
        assert "generation_events_p20450601" in created
        assert await partitions_holding(conn, "generation_events", ahead) == {
            "generation_events_p20450601"
        }
        assert await partitions_holding(conn, "generated_files", ahead) == {
            "generated_files_p20450601"
        }
        assert await rows_of(conn, ahead) == before
        assert (await event_log.check_chains(conn, [ahead])).breaks == []
    # And the log goes on, in the new partition.
    async with pool.acquire() as conn:
        appended = await event_log.append(conn, ahead, [delta(2)])
        assert appended.last_seq == 4
        assert await partitions_holding(conn, "generation_events", ahead) == {
            "generation_events_p20450601"
        }


# --- every read of one run prunes to its partition ------------------------------------------


def relations(plan: dict[str, Any], executed_only: bool) -> list[str]:
    """The relations an EXPLAIN (FORMAT JSON) plan scans (with ANALYZE: that it ran)."""
    found: list[str] = []
    nodes = [plan]
    while nodes:
        node = nodes.pop()
        if "Relation Name" in node and (not executed_only or node.get("Actual Loops", 1) > 0):
            found.append(node["Relation Name"])
        nodes += node.get("Plans", [])
    return found


def subplans_removed(plan: dict[str, Any]) -> int:
    nodes, removed = [plan], 0
    while nodes:
        node = nodes.pop()
        removed += node.get("Subplans Removed", 0)
        nodes += node.get("Plans", [])
    return removed


Query = tuple[str, Callable[[UUID], tuple[Any, ...]]]

ONE_RUN_READS: dict[str, Query] = {
    "events page": (event_log.SELECT_EVENTS_AFTER, lambda g: (g, 0, 500)),
    "run state": (event_log.SELECT_RUN_STATE, lambda g: (g,)),
    "run files": (event_log.SELECT_RUN_FILES, lambda g: (g,)),
    "snapshot milestones": (snapshots.SELECT_MILESTONES, lambda g: (g,)),
    "snapshot event": (snapshots.SELECT_EVENT, lambda g: (g, 3)),
    "snapshot text tail": (snapshots.SELECT_TEXT_TAIL, lambda g: (g, 3, 400)),
    "snapshot text before": (snapshots.SELECT_TEXT_BEFORE, lambda g: (g, 3)),
    "files": (generations.SELECT_FILES, lambda g: (g, "alice")),
    "file": (generations.SELECT_FILE, lambda g: (g, "alice", "app/main.py")),
    "file contents": (generations.SELECT_FILE_CONTENTS, lambda g: (g, "alice")),
    "export events": (transfer.SELECT_EVENT_ROWS, lambda g: (g, 0, 500)),
    "export files": (transfer.SELECT_FILE_ROWS, lambda g: (g,)),
    "owner feed run page": (owner_feed.SELECT_RUN_PAGE, lambda g: (g, 0, 10, 500)),
}


async def explain(
    conn: Connection, query: str, args: tuple[Any, ...], *, generic: bool
) -> dict[str, Any]:
    """The executed plan, in a transaction rolled back (the append's plan writes). ``generic``:
    the plan a prepared statement gets once PostgreSQL stops planning it per call (asyncpg
    prepares every statement), built without the parameters' values; EXPLAIN of a statement
    with parameters plans it with them, so the generic one is seen through PREPARE/EXECUTE."""
    tx = conn.transaction()
    await tx.start()
    try:
        if generic:  # EXECUTE takes no protocol parameters: its arguments are literals
            types = [t.name for t in (await conn.prepare(query)).get_parameters()]
            literals = [
                await conn.fetchval(f"SELECT quote_nullable($1::{name}) || '::{name}'", arg)
                for name, arg in zip(types, args, strict=True)
            ]
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            await conn.execute(f"PREPARE explained AS {query}")
            query, args = f"EXECUTE explained({', '.join(literals)})", ()
        text = await conn.fetchval(f"EXPLAIN (ANALYZE, COSTS OFF, FORMAT JSON) {query}", *args)
    finally:
        await tx.rollback()
        if generic:
            await conn.execute("DEALLOCATE explained")
    plan: dict[str, Any] = json.loads(text)[0]["Plan"]
    return plan


async def three_periods_of_runs(pool: Pool) -> UUID:
    """Runs in last month's, this month's and next month's partitions and in the default;
    returns this month's."""
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        await ensure_partitions(conn, "month", 1, now - timedelta(days=31))
        await ensure_partitions(conn, "month", 1, now)
    for at in (now - timedelta(days=31), now + timedelta(days=31)):
        await run_with_a_file(pool, v7_at(at))
    await run_with_a_file(pool, uuid4())
    return await run_with_a_file(pool, v7_at(now))


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
@pytest.mark.parametrize("read", sorted(ONE_RUN_READS))
async def test_a_read_of_one_run_scans_one_partition(pool: Pool, read: str, generic: bool) -> None:
    generation_id = await three_periods_of_runs(pool)
    query, args = ONE_RUN_READS[read]
    async with pool.acquire() as conn:
        table = "generated_files" if "FROM generated_files" in query else "generation_events"
        (home,) = await partitions_holding(conn, table, generation_id)
        plan = await explain(conn, query, args(generation_id), generic=generic)
    scanned = {r for r in relations(plan, executed_only=True) if r.startswith(table)}
    assert scanned == {home}, plan
    if generic:  # pruned when the executor starts, with the parameters' values
        assert subplans_removed(plan) > 0, plan
    else:  # pruned by the planner: the other partitions are not in the plan at all
        assert {r for r in relations(plan, executed_only=False) if r.startswith(table)} == {home}


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
async def test_the_append_reads_and_writes_one_partition(pool: Pool, generic: bool) -> None:
    generation_id = await three_periods_of_runs(pool)
    file = NewFile("app/other.py", "x = 1\n", "python")
    parameters = _append_parameters(generation_id, [file.saved("code", 0.6)], [file], None, None)
    async with pool.acquire() as conn:
        (home,) = await partitions_holding(conn, "generation_events", generation_id)
        plan = await explain(conn, event_log.INSERT_EVENTS, tuple(parameters), generic=generic)
    # The chain's lookup of the run's last event runs once, in the run's partition: the others
    # are pruned at run time (the id comes from the CTE) and show as never executed. The rows
    # themselves are routed to their partition by the INSERT, with no scan.
    scanned = {r for r in relations(plan, executed_only=True) if r.startswith("generation_ev")}
    assert scanned <= {home, "generation_events"}, plan
    assert home in scanned, plan


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
async def test_append_many_reads_and_writes_only_its_runs_partitions(
    pool: Pool, generic: bool
) -> None:
    """One statement for runs of two periods: each run's chain lookup runs in its own
    partition alone (pruned at run time, per run), and no other partition is read."""
    this_month = await three_periods_of_runs(pool)
    last_month = await run_with_a_file(pool, v7_at(datetime.now(UTC) - timedelta(days=31)))
    file = NewFile("app/other.py", "x = 1\n", "python")
    appends = [
        event_log.prepare(this_month, [file.saved("code", 0.6)], [file]),
        event_log.prepare(last_month, [delta(2), delta(3)]),
    ]
    parameters = event_log._many_parameters(appends)
    async with pool.acquire() as conn:
        homes = set()
        for generation_id in (this_month, last_month):
            homes |= await partitions_holding(conn, "generation_events", generation_id)
        plan = await explain(conn, event_log.APPEND_MANY, tuple(parameters), generic=generic)
    assert len(homes) == 2
    scanned = {r for r in relations(plan, executed_only=True) if r.startswith("generation_ev")}
    assert scanned <= homes | {"generation_events"}, plan
    assert homes <= scanned, plan


async def test_the_feed_reads_each_partition_through_its_feed_index(pool: Pool) -> None:
    """The global feed is ordered by transaction, across every run: it must visit every
    partition (a Merge Append of one index scan each), never a sequential scan."""
    await three_periods_of_runs(pool)
    async with pool.acquire() as conn:
        # Enough rows that an index beats reading a partition whole and sorting it.
        await conn.execute(
            """
            INSERT INTO generation_events
                (generation_id, seq, type, status, stage, progress, message, payload)
            SELECT g.id, s, 'llm.delta', 'running', 'code', 0.5, '', '{}'
            FROM generations AS g, generate_series(10, 3000) AS s;
            ANALYZE generation_events;
            """
        )
        count = len(await select_partitions(conn, "generation_events"))
        plan = await explain(
            conn, event_log.SELECT_FEED, (0, event_log.NIL_UUID, 0, 500), generic=False
        )
    scans: list[tuple[str, str]] = []
    nodes = [plan]
    while nodes:
        node = nodes.pop()
        if node.get("Relation Name", "").startswith("generation_events"):
            scans.append((node["Node Type"], node.get("Index Name", "")))
        nodes += node.get("Plans", [])
    assert len(scans) == count, scans
    assert all(kind in ("Index Scan", "Index Only Scan") for kind, _ in scans), scans
    assert all(index.endswith(("feed_idx", "tx_id_generation_id_seq_idx")) for _, index in scans)


@pytest.mark.parametrize("generic", [False, True], ids=["custom plan", "generic plan"])
async def test_an_owner_feed_page_reads_that_owners_rows_alone(pool: Pool, generic: bool) -> None:
    """Through each partition's owner index, from the position on: a light owner's page costs
    what a heavy one's does, however many of everyone else's events the log holds."""
    await three_periods_of_runs(pool)  # alice's
    heavy = await new_generation(pool, owner="bob")
    async with pool.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO generation_events
                (generation_id, seq, type, status, stage, progress, message, payload)
            SELECT $1, s, 'llm.delta', 'running', 'code', 0.5, '', '{}'
            FROM generate_series(2, 5000) AS s
            """,
            heavy,
        )
        await conn.execute("ANALYZE generation_events")
        (home,) = await partitions_holding(conn, "generation_events", heavy)
        since = await owner_feed.select_owner_since(conn)
        plan = await explain(
            conn,
            owner_feed.SELECT_OWNER_FEED,
            ("alice", since, event_log.NIL_UUID, 0, 500),
            generic=generic,
        )
        rows, _ = await owner_feed.select_owner_feed(
            conn, "alice", event_log.FeedPosition(since), 500, since
        )
    assert len(rows) == 4 * 3  # four runs, each queued + a delta + a saved file
    scans: list[dict[str, Any]] = []
    nodes = [plan]
    while nodes:
        node = nodes.pop()
        if node.get("Relation Name", "").startswith("generation_events"):
            scans.append(node)
        nodes += node.get("Plans", [])
    # The partitions of a few rows are read whole (cheaper); bob's, of 5,000, by its index.
    (big,) = [scan for scan in scans if scan["Relation Name"] == home]
    assert big["Node Type"] == "Index Scan", big
    assert big["Index Name"].endswith(("owner_feed_idx", "owner_tx_id_generation_id_seq_idx"))
    assert "owner" in big["Index Cond"], big
    assert all(scan.get("Rows Removed by Filter", 0) < 10 for scan in scans), scans
    assert sum(scan["Actual Rows"] * scan["Actual Loops"] for scan in scans) <= len(rows) + len(
        scans
    ), "read bob's rows"


async def test_runs_created_while_periods_are_made_never_deadlock(pool: Pool) -> None:
    # Creating a period takes the default partition's lock, then (for the partition's foreign
    # key) a lock on generations; a run's creation holds generations, then reads the log. The
    # creator must be the one that yields, every time: never a run's creation or append.
    stop = asyncio.Event()
    made: list[str] = []

    async def create_runs() -> int:
        count = 0
        while not stop.is_set():
            generation_id = await new_generation(pool)
            async with pool.acquire() as conn:
                await event_log.append(conn, generation_id, [delta(2)])
            count += 1
        return count

    async def make_periods() -> None:
        try:
            for day in range(40):
                now = datetime(2060, 1, 1, tzinfo=UTC) + timedelta(days=day)
                async with pool.acquire() as conn:
                    with contextlib.suppress(asyncpg.LockNotAvailableError):
                        made.extend(await ensure_partitions(conn, "day", 2, now))
        finally:
            stop.set()

    runners = [asyncio.create_task(create_runs()) for _ in range(6)]
    await make_periods()
    counts = await asyncio.gather(*runners)
    assert sum(counts) > 0
    assert len(made) > 40
