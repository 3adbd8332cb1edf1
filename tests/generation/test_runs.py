from __future__ import annotations

import asyncio
import json
from uuid import UUID, uuid4

import pytest

from service.errors import Conflict, InvalidRequest, LeaseLost, NotFound, TooManyRequests
from service.events import EventType, NewEvent, Status
from service.generation import runs
from service.spec import Spec
from service.store import event_log, generations
from service.store.db import Pool, create_pool
from tests.helpers import DONE, SPEC, STARTED, create_generation, new_generation

CANCELLED = NewEvent(EventType.CANCELLED, "core", 0.1, "Cancelled")

OFFLINE_ONLY = frozenset({"offline"})


async def event_types(pool: Pool, generation_id: UUID) -> list[str]:
    async with pool.acquire() as conn:
        events = await event_log.select_events_after(conn, generation_id, 0, 1000)
    return [event.type for event in events]


async def owned(pool: Pool, owner: str) -> list[generations.Generation]:
    async with pool.acquire() as conn:
        return await generations.select_generations(
            conn, owner, status=None, before=None, limit=100
        )


async def test_create_generation_defaults_to_offline_and_queues_it(pool: Pool) -> None:
    generation_id = await create_generation(pool)
    async with pool.acquire() as conn:
        generation = await generations.select_generation(conn, "alice", generation_id)
        events = await event_log.select_events_after(conn, generation_id, 0, 10)
    assert generation.provider == "offline"
    assert generation.status is Status.QUEUED
    assert generation.last_seq == 1
    assert [(e.seq, e.type) for e in events] == [(1, EventType.QUEUED)]
    assert json.loads(events[0].json)["status"] == "queued"


async def test_create_generation_refuses_an_unknown_provider_and_stores_nothing(
    pool: Pool,
) -> None:
    with pytest.raises(InvalidRequest, match=r"unknown provider 'anthropic'.*offline"):
        await runs.create_generation(
            pool,
            "alice",
            Spec.model_validate(SPEC),
            provider="anthropic",
            model=None,
            available_providers=frozenset({"offline", "gemini"}),
            verify="off",
        )
    assert await owned(pool, "alice") == []


@pytest.mark.parametrize(
    ("provider", "needs"),
    [
        ("gemini", "gemini needs GEMINI_API_KEY or GOOGLE_API_KEY"),
        ("openai", "openai needs GENSTREAM_OPENAI_BASE_URL or GENSTREAM_OPENAI_API_KEY"),
    ],
)
async def test_create_generation_refuses_a_provider_unavailable_here_and_stores_nothing(
    pool: Pool, provider: str, needs: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        await runs.create_generation(
            pool,
            "alice",
            Spec.model_validate(SPEC),
            provider=provider,
            model="some-model",
            available_providers=OFFLINE_ONLY,
            verify="off",
        )
    assert str(refused.value) == (
        f"provider {provider!r} is not available on this server ({needs})"
    )
    assert await owned(pool, "alice") == []


async def test_cancelling_a_queued_unclaimed_generation_cancels_it_at_once(pool: Pool) -> None:
    generation_id = await create_generation(pool)

    status = await runs.cancel_generation(pool, "alice", generation_id)

    assert status is Status.CANCELLED
    assert await event_types(pool, generation_id) == [EventType.QUEUED, EventType.CANCELLED]
    async with pool.acquire() as conn:
        generation = await generations.select_generation(conn, "alice", generation_id)
        assert generation.status is Status.CANCELLED
        assert generation.finished_at is not None
        # Nobody can claim it any more.
        assert await generations.claim_next(conn, "worker-x", 60) is None


async def test_cancelling_a_claimed_generation_only_flags_it_for_its_worker(pool: Pool) -> None:
    generation_id = await create_generation(pool)
    async with pool.acquire() as conn:
        claimed = await generations.claim_next(conn, "worker-x", 60)
    assert claimed is not None
    assert claimed.id == generation_id

    status = await runs.cancel_generation(pool, "alice", generation_id)

    assert status is Status.QUEUED
    assert await event_types(pool, generation_id) == [EventType.QUEUED]
    async with pool.acquire() as conn:
        appended = await event_log.append(
            conn, generation_id, [NewEvent(EventType.STARTED, "starting", 0.0, "Started")]
        )
    assert appended.cancel_requested


async def test_cancelling_a_finished_generation_is_a_conflict(pool: Pool) -> None:
    generation_id = await create_generation(pool)
    async with pool.acquire() as conn:
        await event_log.append(
            conn, generation_id, [NewEvent(EventType.SUCCEEDED, "done", 1.0, "done")]
        )

    with pytest.raises(Conflict, match="already succeeded"):
        await runs.cancel_generation(pool, "alice", generation_id)

    assert await event_types(pool, generation_id) == [EventType.QUEUED, EventType.SUCCEEDED]


async def test_cancelling_twice_is_a_conflict_the_second_time(pool: Pool) -> None:
    generation_id = await create_generation(pool)
    await runs.cancel_generation(pool, "alice", generation_id)
    with pytest.raises(Conflict, match="already cancelled"):
        await runs.cancel_generation(pool, "alice", generation_id)
    assert await event_types(pool, generation_id) == [EventType.QUEUED, EventType.CANCELLED]


async def test_cancelling_another_owners_generation_is_not_found_and_changes_nothing(
    pool: Pool,
) -> None:
    generation_id = await create_generation(pool, owner="alice")

    with pytest.raises(NotFound):
        await runs.cancel_generation(pool, "mallory", generation_id)

    assert await event_types(pool, generation_id) == [EventType.QUEUED]
    async with pool.acquire() as conn:
        claimed = await generations.claim_next(conn, "worker-x", 60)
        assert claimed is not None
        appended = await event_log.append(
            conn, generation_id, [NewEvent(EventType.STARTED, "starting", 0.0, "Started")]
        )
    assert not appended.cancel_requested


async def test_cancelling_an_unknown_generation_is_not_found(pool: Pool) -> None:
    with pytest.raises(NotFound):
        await runs.cancel_generation(pool, "alice", uuid4())


async def test_beyond_the_active_runs_quota_a_create_is_refused_with_a_retry_hint(
    pool: Pool,
) -> None:
    limits = runs.CreateLimits(max_active_runs=2)
    first = await create_generation(pool, "alice", limits=limits)
    await create_generation(pool, "alice", limits=limits)

    with pytest.raises(TooManyRequests, match="2 generations queued or running") as refused:
        await create_generation(pool, "alice", limits=limits)
    assert refused.value.retry_after_s == runs.ACTIVE_RETRY_AFTER_S
    await create_generation(pool, "bob", limits=limits)  # another owner's quota is its own

    await runs.cancel_generation(pool, "alice", first)  # a finished one frees its place
    await create_generation(pool, "alice", limits=limits)


async def test_beyond_the_rate_a_create_is_refused_until_the_minute_has_passed(
    pool: Pool,
) -> None:
    limits = runs.CreateLimits(runs_per_minute=3)
    for _ in range(3):
        await create_generation(pool, "alice", limits=limits)
    with pytest.raises(TooManyRequests, match="3 generations in the last minute") as refused:
        await create_generation(pool, "alice", limits=limits)
    assert 1 <= refused.value.retry_after_s <= 60

    async with pool.acquire() as conn:  # as if the minute had passed
        await conn.execute("UPDATE generations SET created_at = created_at - interval '61 s'")
    await create_generation(pool, "alice", limits=limits)


async def test_concurrent_creates_never_slip_past_the_quota(pool: Pool, database_url: str) -> None:
    """Ten creates at once through two pools (two processes, as far as PostgreSQL can tell):
    the owner's lock makes check-and-insert one step, so exactly the quota gets through."""
    other = await create_pool(database_url, min_size=5, max_size=5)
    limits = runs.CreateLimits(max_active_runs=4)
    try:
        outcomes = await asyncio.gather(
            *(
                create_generation(pool if n % 2 else other, "alice", limits=limits)
                for n in range(10)
            ),
            return_exceptions=True,
        )
    finally:
        await other.close()
    created = [outcome for outcome in outcomes if isinstance(outcome, UUID)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, TooManyRequests)]
    assert (len(created), len(refused)) == (4, 6), outcomes
    assert len(await owned(pool, "alice")) == 4


async def test_a_retry_fences_off_a_worker_still_holding_the_attempt_before(pool: Pool) -> None:
    """A worker paused past its lease, the run cancelled and retried meanwhile: when it
    wakes, its appends (fenced by its old attempt) are refused; the retry's are not."""
    generation_id = await new_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE generations SET attempt = 1 WHERE id = $1", generation_id)
        await event_log.append(conn, generation_id, [STARTED], fence=1)
        await event_log.append(conn, generation_id, [CANCELLED])
    await runs.retry_generation(pool, "alice", generation_id)
    async with pool.acquire() as conn:
        with pytest.raises(LeaseLost, match="held by attempt 2, not 1"):
            await event_log.append(conn, generation_id, [DONE], fence=1)
        head = await event_log.select_head(conn, generation_id)
    assert (head.status, head.attempt, head.last_seq) == ("queued", 2, 4)
