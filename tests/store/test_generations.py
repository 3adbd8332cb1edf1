"""The generations table outside the log: claiming, leases, release, cancel, listing, files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from uuid import UUID, uuid4

import asyncpg
import pytest

from service.errors import NotFound
from service.events import EventType, NewEvent, NewFile, Status
from service.store import event_log, generations
from service.store.db import Pool, asyncpg_dsn
from tests.helpers import new_generation


async def claim(pool: Pool, worker: str, lease_s: float = 60.0) -> generations.Claimed | None:
    async with pool.acquire() as conn:
        return await generations.claim_next(conn, worker, lease_s)


async def finish(pool: Pool, generation_id: UUID, kind: EventType) -> None:
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [NewEvent(kind, "done", 1.0, "the end")])


@asynccontextmanager
async def listening(database_url: str, channel: str) -> AsyncIterator[asyncio.Queue[str]]:
    """Payloads NOTIFYed on ``channel``, heard on a dedicated connection."""
    received: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(_conn: object, _pid: int, _channel: str, payload: object) -> None:
        received.put_nowait(str(payload))

    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.add_listener(channel, on_notify)
        try:
            yield received
        finally:
            await conn.remove_listener(channel, on_notify)
    finally:
        await conn.close()


async def test_claim_next_takes_queued_runs_oldest_first_and_bumps_the_attempt(
    pool: Pool,
) -> None:
    ids = [await new_generation(pool) for _ in range(3)]
    claims = [await claim(pool, "worker-a") for _ in range(3)]
    assert [c.id if c else None for c in claims] == ids
    assert all(c is not None and c.attempt == 1 for c in claims)
    first = claims[0]
    assert first is not None
    assert first.status is Status.QUEUED
    assert first.provider == "offline"
    assert first.spec == {"project": "p", "entities": []}
    assert first.cancel_requested is False
    assert await claim(pool, "worker-a") is None


async def test_the_next_claim_goes_to_the_owner_holding_the_fewest_runs(pool: Pool) -> None:
    backlog = [await new_generation(pool, "alice") for _ in range(4)]
    first = await claim(pool, "w1")
    assert first is not None
    assert first.id == backlog[0]
    newcomer = await new_generation(pool, "bob")  # newest of all, yet bob holds nothing

    second = await claim(pool, "w2")
    third = await claim(pool, "w3")  # one each held: the oldest waiting run goes next
    fourth = await claim(pool, "w4")

    assert second is not None
    assert third is not None
    assert fourth is not None
    assert second.id == newcomer
    assert (third.id, fourth.id) == (backlog[1], backlog[2])


async def test_a_run_under_a_live_lease_is_not_claimable_by_another_worker(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    held = await claim(pool, "worker-a", lease_s=60)
    assert held is not None
    assert held.id == generation_id
    assert await claim(pool, "worker-b") is None


async def test_a_run_whose_lease_expired_is_claimed_again_with_the_next_attempt(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    first = await claim(pool, "worker-a", lease_s=0.2)
    assert first is not None
    assert await claim(pool, "worker-b") is None
    await asyncio.sleep(0.3)
    second = await claim(pool, "worker-b")
    assert second is not None
    assert (second.id, second.attempt) == (generation_id, first.attempt + 1)


async def test_finished_runs_are_never_claimed(pool: Pool) -> None:
    for kind in (EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED):
        await finish(pool, await new_generation(pool), kind)
    expired = await new_generation(pool)
    assert await claim(pool, "worker-a", lease_s=0.0) is not None  # claimed, lease over at once
    await finish(pool, expired, EventType.SUCCEEDED)
    assert await claim(pool, "worker-b") is None


async def test_renew_leases_returns_only_the_runs_the_worker_still_holds(pool: Pool) -> None:
    taken_over = await new_generation(pool)
    kept = await new_generation(pool)
    assert await claim(pool, "worker-a", lease_s=0.2) is not None
    assert await claim(pool, "worker-a", lease_s=0.2) is not None
    await asyncio.sleep(0.3)
    other = await claim(pool, "worker-b")  # the oldest expired run
    assert other is not None
    assert other.id == taken_over
    async with pool.acquire() as conn:
        held = await generations.renew_leases(conn, "worker-a", 60, [taken_over, kept])
        by_b = await generations.renew_leases(conn, "worker-b", 60, [taken_over, kept])
    assert held == {kept}
    assert by_b == {taken_over}
    # The renewal is real: the kept run's lease is live again, nobody else can claim it.
    assert await claim(pool, "worker-c") is None


async def test_released_runs_are_claimable_at_once_and_workers_are_notified(
    pool: Pool, database_url: str
) -> None:
    generation_id = await new_generation(pool)
    first = await claim(pool, "worker-a", lease_s=60)
    assert first is not None
    assert await claim(pool, "worker-b") is None
    async with asyncio.timeout(5), listening(database_url, generations.JOBS_CHANNEL) as jobs:
        async with pool.acquire() as conn:
            # Someone else's release changes nothing and wakes nobody.
            await generations.release_leases(conn, "worker-b", [generation_id])
            await generations.release_leases(conn, "worker-a", [generation_id])
        assert await jobs.get() == str(generation_id)
        second = await claim(pool, "worker-b")
        assert jobs.empty()
    assert second is not None
    assert (second.id, second.attempt) == (generation_id, 2)


async def test_lock_for_cancel_notifies_the_cancel_channel_on_commit_only(
    pool: Pool, database_url: str
) -> None:
    rolled_back = await new_generation(pool)
    committed = await new_generation(pool)
    assert await claim(pool, "worker-a") is not None  # the older one is held by a worker
    async with asyncio.timeout(5), listening(database_url, generations.CANCEL_CHANNEL) as heard:
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            target = await generations.lock_for_cancel(conn, "alice", rolled_back)
            assert (target.status, target.held) == (Status.QUEUED, True)
            await asyncio.sleep(0.2)
            assert heard.empty()  # nothing before the commit
            await transaction.rollback()

            async with conn.transaction():
                target = await generations.lock_for_cancel(conn, "alice", committed)
            assert (target.status, target.held) == (Status.QUEUED, False)
        # Notifications arrive in commit order: had the rolled-back one been sent, it would
        # come first.
        assert await heard.get() == str(committed)
        async with pool.acquire() as conn:
            assert (await event_log.select_head(conn, rolled_back)).cancel_requested is False
            assert (await event_log.select_head(conn, committed)).cancel_requested is True


async def test_lock_for_cancel_on_another_owners_generation_is_not_found(pool: Pool) -> None:
    generation_id = await new_generation(pool, owner="alice")
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(NotFound):
            await generations.lock_for_cancel(conn, "bob", generation_id)
    async with pool.acquire() as conn:
        assert (await event_log.select_head(conn, generation_id)).cancel_requested is False


async def test_concurrent_claims_take_each_run_exactly_once(pool: Pool) -> None:
    ids = {await new_generation(pool) for _ in range(5)}
    claimed: list[tuple[str, UUID, int]] = []
    start = asyncio.Event()

    async def worker(n: int) -> None:
        await start.wait()
        while (got := await claim(pool, f"worker-{n}")) is not None:
            claimed.append((f"worker-{n}", got.id, got.attempt))

    tasks = [asyncio.create_task(worker(n)) for n in range(10)]
    start.set()
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks)
    assert sorted(generation_id for _, generation_id, _ in claimed) == sorted(ids)
    assert all(attempt == 1 for _, _, attempt in claimed)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, claimed_by FROM generations WHERE id = ANY($1)", list(ids)
        )
    holders = {row["id"]: row["claimed_by"] for row in rows}
    assert holders == {generation_id: worker for worker, generation_id, _ in claimed}


async def test_generation_pages_are_newest_first_per_owner_and_cover_each_once(
    pool: Pool,
) -> None:
    mine = [await new_generation(pool, "alice") for _ in range(5)]
    theirs = [await new_generation(pool, "bob") for _ in range(2)]
    await finish(pool, mine[1], EventType.SUCCEEDED)

    seen: list[UUID] = []
    before: tuple[datetime, UUID] | None = None
    async with pool.acquire() as conn:
        while page := await generations.select_generations(
            conn, "alice", status=None, before=before, limit=2
        ):
            assert len(page) <= 2
            assert all(g.owner == "alice" for g in page)
            seen.extend(g.id for g in page)
            before = (page[-1].created_at, page[-1].id)
        succeeded = await generations.select_generations(
            conn, "alice", status=Status.SUCCEEDED, before=None, limit=10
        )
        queued = await generations.select_generations(
            conn, "alice", status=Status.QUEUED, before=None, limit=10
        )
        bobs = await generations.select_generations(conn, "bob", status=None, before=None, limit=10)
        with pytest.raises(NotFound):
            await generations.select_generation(conn, "bob", mine[0])
        assert (await generations.select_generation(conn, "alice", mine[0])).id == mine[0]
    assert seen == mine[::-1]
    assert [g.id for g in succeeded] == [mine[1]]
    assert [g.id for g in queued] == [mine[4], mine[3], mine[2], mine[0]]
    assert [g.id for g in bobs] == theirs[::-1]


async def test_files_are_only_visible_to_the_generations_owner(pool: Pool) -> None:
    generation_id = await new_generation(pool, "alice")
    files = [NewFile("b.py", "b = 2\n", "python"), NewFile("a.md", "# A\n", "markdown")]
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [f.saved("core", 0.5) for f in files], files)
        listed = await generations.select_files(conn, "alice", generation_id)
        one = await generations.select_file(conn, "alice", generation_id, "b.py")
        contents = await generations.select_file_contents(conn, "alice", generation_id)
        lookups: list[Callable[[], Awaitable[object]]] = [
            lambda: generations.select_files(conn, "bob", generation_id),
            lambda: generations.select_file(conn, "bob", generation_id, "b.py"),
            lambda: generations.select_file_contents(conn, "bob", generation_id),
            lambda: generations.select_file(conn, "alice", generation_id, "missing.py"),
            lambda: generations.select_files(conn, "alice", uuid4()),
        ]
        for lookup in lookups:
            with pytest.raises(NotFound):
                await lookup()
    assert [(f.path, f.size, f.language, f.seq) for f in listed] == [
        ("a.md", 4, "markdown", 3),
        ("b.py", 6, "python", 2),
    ]
    assert one == ("b = 2\n", "python")
    assert contents == [("a.md", "# A\n"), ("b.py", "b = 2\n")]
