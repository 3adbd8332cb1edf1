"""``generation/appender.py``: many runs' appends committed together, and each writer told
exactly what its own append would have been told alone."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from service.errors import LeaseLost, StoreUnavailable
from service.events import EventType, NewFile
from service.generation import appender as appender_module
from service.generation.appender import Appender
from service.generation.runner import LogEmitter
from service.observe import metrics
from service.store import event_log, generations
from service.store.db import Connection, Pool, asyncpg_dsn, connection, create_pool
from service.store.event_log import Appended, AppendParameters
from service.store.generations import Claimed
from tests.helpers import Database, delta, new_generation, stored_events, wait_until


@pytest.fixture
async def appender(pool: Pool) -> AsyncIterator[Appender]:
    started = Appender(pool)
    started.start()
    yield started
    await started.stop()


async def claimed_runs(pool: Pool, count: int) -> list[Claimed]:
    """``count`` new runs, each claimed as a worker claims one (attempt 1: the fence)."""
    for _ in range(count):
        await new_generation(pool)
    claims = []
    async with pool.acquire() as conn:
        for _ in range(count):
            claimed = await generations.claim_next(conn, "test-worker", 60)
            assert claimed is not None
            claims.append(claimed)
    return claims


class Statements:
    """What the appender sent from now on (``event_log.append_many`` and ``append_prepared``,
    recorded and passed on; ``event_log.append`` goes through the latter too), with hooks that
    run before a statement and after a group's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.groups: list[list[UUID]] = []  # each append_many's runs
        self.alone: list[UUID] = []  # each append_prepared's run
        self.sent = asyncio.Event()
        self.before: Callable[[Connection], Awaitable[None]] | None = None
        self.after: Callable[[], None] | None = None  # may raise: the answer lost
        real_many, real_alone = event_log.append_many, event_log.append_prepared

        async def append_many(conn: Connection, appends: list[AppendParameters]) -> Any:
            self.groups.append([one.generation_id for one in appends])
            await self._hold(conn)
            outcomes = await real_many(conn, appends)
            if self.after is not None:
                self.after()
            return outcomes

        async def append_prepared(
            conn: Connection, parameters: AppendParameters, **options: bool
        ) -> Appended:
            self.alone.append(parameters.generation_id)
            await self._hold(conn)
            return await real_alone(conn, parameters, **options)

        monkeypatch.setattr(event_log, "append_many", append_many)
        monkeypatch.setattr(event_log, "append_prepared", append_prepared)

    async def _hold(self, conn: Connection) -> None:
        self.sent.set()
        if self.before is not None:
            await self.before(conn)


async def events_data(pool: Pool, generation_id: UUID) -> list[Any]:
    return [json.loads(event.json)["data"] for event in await stored_events(pool, generation_id)]


async def test_concurrent_emits_of_many_runs_land_in_groups_numbered_and_chained(
    pool: Pool, appender: Appender, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = await claimed_runs(pool, 12)
    statements = Statements(monkeypatch)
    emitters = [LogEmitter(pool, c, retry_s=5.0, appender=appender) for c in claims]
    appended = metrics.EVENTS_APPENDED.value(EventType.LLM_DELTA.value)
    notifies = metrics.NOTIFIES_SENT.value()
    groups = metrics.APPEND_GROUP_SIZE.count()

    async def writer(k: int, emitter: LogEmitter) -> None:
        for i in range(15):
            await emitter.emit(*(delta(k * 1000 + i * 10 + j) for j in range(1 + (k + i) % 3)))

    await asyncio.gather(*(writer(k, e) for k, e in enumerate(emitters)))

    batches = [1 + (k + i) % 3 for k in range(12) for i in range(15)]
    for k, claim in enumerate(claims):
        data = await events_data(pool, claim.id)
        expected = [k * 1000 + i * 10 + j for i in range(15) for j in range(1 + (k + i) % 3)]
        assert [d.get("n") for d in data[1:]] == expected
        head = [event.seq for event in await stored_events(pool, claim.id)]
        assert head == list(range(1, len(expected) + 2))
    async with pool.acquire() as conn:
        check = await event_log.check_chains(conn, [c.id for c in claims])
    assert check.breaks == []
    assert metrics.EVENTS_APPENDED.value(EventType.LLM_DELTA.value) - appended == sum(batches)
    assert metrics.NOTIFIES_SENT.value() - notifies == len(batches)
    sent = metrics.APPEND_GROUP_SIZE.count() - groups
    assert sent == len(statements.groups) + len(statements.alone)
    assert sent <= len(batches) // 4, "the appends were hardly grouped"
    assert max(len(group) for group in statements.groups) == 12
    assert all(len(set(group)) == len(group) for group in statements.groups)


async def test_a_lone_append_goes_at_once_with_the_statement_it_always_had(
    pool: Pool, appender: Appender, monkeypatch: pytest.MonkeyPatch
) -> None:
    (claim,) = await claimed_runs(pool, 1)
    statements = Statements(monkeypatch)
    emitter = LogEmitter(pool, claim, retry_s=5.0, appender=appender)
    for n in range(3):
        await emitter.emit(delta(n))
    assert statements.alone == [claim.id] * 3
    assert statements.groups == []


async def test_a_runs_second_append_waits_for_the_next_group(
    pool: Pool, appender: Appender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two writers of one run (a stale one among them) in one statement would both number
    from the same last_seq: the second goes in the statement after."""
    one, other = await new_generation(pool), await new_generation(pool)
    statements = Statements(monkeypatch)
    outcomes = await asyncio.gather(
        appender.append(one, [delta(1)]),
        appender.append(other, [delta(2)]),
        appender.append(one, [delta(3), delta(4)]),
    )
    assert list(outcomes) == [Appended(2, False), Appended(2, False), Appended(4, False)]
    assert statements.groups == [[one, other]]
    assert statements.alone == [one]
    assert [d.get("n") for d in await events_data(pool, one)][1:] == [1, 3, 4]


async def test_a_refused_append_raises_lease_lost_in_its_writer_alone(
    pool: Pool, appender: Appender, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims = await claimed_runs(pool, 3)
    async with pool.acquire() as conn:  # another worker took the middle run over
        await conn.execute("UPDATE generations SET attempt = 2 WHERE id = $1", claims[1].id)
    statements = Statements(monkeypatch)
    emitters = [LogEmitter(pool, c, retry_s=5.0, appender=appender) for c in claims]
    outcomes = await asyncio.gather(
        *(emitter.emit(delta(k)) for k, emitter in enumerate(emitters)), return_exceptions=True
    )
    assert outcomes[0] is None
    assert isinstance(outcomes[1], LeaseLost)
    assert outcomes[2] is None
    assert statements.groups == [[c.id for c in claims]]
    assert [d.get("n") for d in await events_data(pool, claims[0].id)] == [None, 0]
    assert [d.get("n") for d in await events_data(pool, claims[1].id)] == [None]
    assert [d.get("n") for d in await events_data(pool, claims[2].id)] == [None, 2]


@pytest.mark.parametrize("others", [0, 2], ids=["alone", "in-a-group"])
async def test_a_run_whose_row_is_held_elsewhere_waits_aside_and_the_others_go_on(
    pool: Pool, appender: Appender, others: int
) -> None:
    """A row locked by another transaction (an operator's, a repair) holds its own run's
    append until it is released, and the other runs' appends for a moment at most."""
    held, *rest = await claimed_runs(pool, 1 + others)
    async with pool.acquire() as locker:
        transaction = locker.transaction()
        await transaction.start()
        try:
            await locker.execute("SELECT 1 FROM generations WHERE id = $1 FOR UPDATE", held.id)
            waiting = asyncio.create_task(appender.append(held.id, [delta(0)], fence=1))
            first = [appender.append(claim.id, [delta(1)], fence=1) for claim in rest]
            await asyncio.gather(*first)
            # The held run is aside now: the others' next appends do not wait for it.
            loop = asyncio.get_running_loop()
            started = loop.time()
            for n in range(3):
                await asyncio.gather(*(appender.append(c.id, [delta(n)], fence=1) for c in rest))
                if not rest:
                    (alone,) = await claimed_runs(pool, 1)
                    await appender.append(alone.id, [delta(n)], fence=1)
            assert loop.time() - started < 2.0, "later appends waited for the held row"
            assert not waiting.done()
        finally:
            await transaction.commit()
        appended = await asyncio.wait_for(waiting, 10)

    assert appended == Appended(2, False)
    assert [d.get("n") for d in await events_data(pool, held.id)] == [None, 0]
    for claim in rest:
        assert [d.get("n") for d in await events_data(pool, claim.id)] == [None, 1, 0, 1, 2]


async def test_a_group_whose_statement_fails_is_sent_again_one_by_one(
    pool: Pool, appender: Appender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retried append whose first try committed (its answer lost) fails the group on its
    stored keys: each append is then sent alone, the replay found stored, the fresh ones
    appended, the refused one refused."""
    replayed, fresh, fenced, also_fresh = [await new_generation(pool) for _ in range(4)]
    file = NewFile("app/a.py", "a = 1\n", "python")
    batch = [delta(1), file.saved("models", 0.6)]
    async with pool.acquire() as conn:
        first = await event_log.append(conn, replayed, batch, [file], keys=["1.1.0", "1.1.1"])
    statements = Statements(monkeypatch)
    replays = metrics.IDEMPOTENT_REPLAYS.value()
    outcomes = await asyncio.gather(
        appender.append(replayed, batch, [file], keys=["1.1.0", "1.1.1"]),
        appender.append(fresh, [delta(2)], keys=["1.1.0"]),
        appender.append(fenced, [delta(3)], fence=9),
        appender.append(also_fresh, [delta(4), delta(5)]),
        return_exceptions=True,
    )
    assert statements.groups == [[replayed, fresh, fenced, also_fresh]]
    # Each alone, side by side: in any order.
    assert sorted(statements.alone) == sorted([replayed, fresh, fenced, also_fresh])
    assert outcomes[0] == first == Appended(3, False)
    assert outcomes[1] == Appended(2, False)
    assert isinstance(outcomes[2], LeaseLost)
    assert outcomes[3] == Appended(3, False)
    assert metrics.IDEMPOTENT_REPLAYS.value() - replays == 1
    assert [d.get("n") for d in await events_data(pool, replayed)] == [None, 1, None]
    assert [d.get("n") for d in await events_data(pool, fenced)] == [None]
    async with pool.acquire() as conn:
        assert (await event_log.check_chains(conn)).breaks == []


async def test_a_malformed_batch_fails_in_its_writer_and_never_reaches_a_group(
    pool: Pool, appender: Appender
) -> None:
    generation_id = await new_generation(pool)
    with pytest.raises(ValueError, match=r"no file\.saved event"):
        await appender.append(generation_id, [delta(1)], [NewFile("a.py", "", "python")])
    assert await appender.append(generation_id, [delta(2)]) == Appended(2, False)


@asynccontextmanager
async def locked(pool: Pool, generation_id: UUID) -> AsyncIterator[None]:
    """The run's row locked by another transaction until the block ends: an append to it
    waits on the lock, its statement in flight."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT 1 FROM generations WHERE id = $1 FOR UPDATE", generation_id)
        yield


async def test_a_writer_cancelled_before_its_group_left_takes_its_append_back(
    pool: Pool, appender: Appender, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy, taken_back, sent = [await new_generation(pool) for _ in range(3)]
    statements = Statements(monkeypatch)
    async with locked(pool, busy):
        blocking = asyncio.create_task(appender.append(busy, [delta(1)]))
        await asyncio.wait_for(statements.sent.wait(), 10)  # in flight, waiting on the lock
        cancelled = asyncio.create_task(appender.append(taken_back, [delta(2)]))
        kept = asyncio.create_task(appender.append(sent, [delta(3)]))
        await asyncio.sleep(0)  # both are waiting behind the group in flight
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
    assert await blocking == Appended(2, False)
    assert await kept == Appended(2, False)
    assert statements.alone == [busy, sent]
    assert [e.seq for e in await stored_events(pool, taken_back)] == [1]


async def test_a_writer_cancelled_in_flight_waits_for_its_group_which_goes_on(
    pool: Pool, appender: Appender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither the group nor the others notice; the cancelled writer's append is stored (its
    group committed), and it hears of its cancel only then, so that the run's next read of
    its own head sees it."""
    cancelled_run, other_run = await new_generation(pool), await new_generation(pool)
    statements = Statements(monkeypatch)
    async with locked(pool, cancelled_run):
        cancelled = asyncio.create_task(appender.append(cancelled_run, [delta(1)]))
        other = asyncio.create_task(appender.append(other_run, [delta(2)]))
        await asyncio.wait_for(statements.sent.wait(), 10)
        assert statements.groups == [[cancelled_run, other_run]]
        cancelled.cancel()
        done, _ = await asyncio.wait([cancelled, other], timeout=0.05)
        assert done == set(), "the group or the cancel did not wait for the row lock"
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await other == Appended(2, False)
    assert [e.seq for e in await stored_events(pool, cancelled_run)] == [1, 2]


async def test_an_unavailable_store_fails_every_writer_of_the_group_who_retries(
    pool: Pool, appender: Appender, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group committed and its answer was lost: for all of the group the commit may or
    may not have happened. Each LogEmitter retries with its keys, and the log holds each
    batch once."""
    claims = await claimed_runs(pool, 3)
    emitters = [LogEmitter(pool, c, retry_s=10.0, appender=appender) for c in claims]
    statements = Statements(monkeypatch)
    retries = metrics.APPEND_RETRIES.value("unavailable")
    replays = metrics.IDEMPOTENT_REPLAYS.value()

    def lose_the_answer() -> None:
        statements.after = None
        raise StoreUnavailable("PostgreSQL is unavailable: the group's answer was lost")

    statements.after = lose_the_answer
    await asyncio.gather(*(e.emit(delta(k)) for k, e in enumerate(emitters)))
    for k, emitter in enumerate(emitters):
        await emitter.emit(delta(10 + k))
    assert statements.groups[0] == [c.id for c in claims]
    assert metrics.APPEND_RETRIES.value("unavailable") - retries == 3
    assert metrics.IDEMPOTENT_REPLAYS.value() - replays == 3
    for k, claim in enumerate(claims):
        assert [d.get("n") for d in await events_data(pool, claim.id)] == [None, k, 10 + k]


@pytest.mark.slow
async def test_a_database_restart_mid_group_loses_nothing_committed(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stopped at once (as a crash) while a group's statement waits in it, then
    started again: every writer retries through the outage with its keys, and every batch is
    in its run's log once, in order, chained."""
    pool = await create_pool(database.url, min_size=1, max_size=8)
    appender = Appender(pool)
    appender.start()
    try:
        claims = await claimed_runs(pool, 8)
        emitters = [LogEmitter(pool, c, retry_s=60.0, appender=appender) for c in claims]
        statements = Statements(monkeypatch)
        crashes: list[asyncio.Task[None]] = []

        async def crash_when_waiting(side: asyncpg.Connection[Any]) -> None:
            async with asyncio.timeout(10):
                while not await side.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"):
                    await asyncio.sleep(0.01)
            await asyncio.to_thread(database.cluster.stop, "immediate")
            side.terminate()
            assert await asyncio.to_thread(database.cluster.start) == database.url

        async def hold_the_fifth_group(conn: Connection) -> None:
            if len(statements.groups) == 5 and not crashes:
                side = await asyncpg.connect(asyncpg_dsn(database.url))
                await side.execute("BEGIN")
                await side.execute(
                    "SELECT 1 FROM generations WHERE id = $1 FOR UPDATE", statements.groups[-1][0]
                )
                crashes.append(asyncio.create_task(crash_when_waiting(side)))

        statements.before = hold_the_fifth_group

        async def writer(k: int, emitter: LogEmitter) -> None:
            for i in range(30):
                await emitter.emit(delta(k * 100 + i), delta(k * 100 + i))

        retries = metrics.APPEND_RETRIES.value("unavailable")
        await asyncio.gather(*(writer(k, e) for k, e in enumerate(emitters)))
        await crashes[0]
        assert metrics.APPEND_RETRIES.value("unavailable") - retries >= len(statements.groups[4])
        for k, claim in enumerate(claims):
            data = await events_data(pool, claim.id)
            assert [d.get("n") for d in data[1:]] == [k * 100 + i for i in range(30) for _ in "ab"]
        async with pool.acquire() as conn:
            assert (await event_log.check_chains(conn)).breaks == []
    finally:
        await appender.stop()
        await pool.close()


async def test_the_groups_connection_goes_back_to_the_pool_when_wanted_and_when_idle(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender keeps its connection between groups; with a pool of one, another task's
    unit of work is still served while a run appends back to back, and the connection is the
    pool's again once the appends stop."""
    monkeypatch.setattr(appender_module, "IDLE_RELEASE_S", 0.2)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    appender = Appender(pool)
    appender.start()
    try:
        (claim,) = await claimed_runs(pool, 1)
        emitter = LogEmitter(pool, claim, retry_s=10.0, appender=appender)
        appended = 0
        done = asyncio.Event()

        async def write() -> None:
            nonlocal appended
            while not done.is_set():
                await emitter.emit(delta(appended))
                appended += 1

        def grown(since: int) -> Callable[[], bool]:
            return lambda: appended > since

        writer = asyncio.create_task(write())
        await wait_until(lambda: appended >= 3 and pool.get_idle_size() == 0, "appends held it")
        for _ in range(3):
            appends_so_far = grown(appended)
            async with asyncio.timeout(5), connection(pool) as conn:
                assert await conn.fetchval("SELECT 1") == 1
            await wait_until(appends_so_far, "the appends go on")
        done.set()
        await writer
        await wait_until(lambda: pool.get_idle_size() == 1, "given back when idle", seconds=5)
        assert len(await stored_events(pool, claim.id)) == appended + 1
    finally:
        await appender.stop()
        await pool.close()


async def test_stop_cancels_the_writers_still_waiting(pool: Pool) -> None:
    stopped = Appender(pool)
    with pytest.raises(RuntimeError, match="not running"):
        await stopped.append(await new_generation(pool), [delta(1)])
    stopped.start()
    await stopped.stop()
    with pytest.raises(RuntimeError, match="not running"):
        await stopped.append(await new_generation(pool), [delta(1)])
