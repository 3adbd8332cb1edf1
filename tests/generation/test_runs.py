from __future__ import annotations

import json
from uuid import UUID, uuid4

import pytest

from service.errors import Conflict, InvalidRequest, NotFound
from service.events import EventType, NewEvent, Status
from service.generation import runs
from service.spec import Spec
from service.store import event_log, generations
from service.store.db import Pool
from tests.helpers import SPEC, create_generation

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
    with pytest.raises(InvalidRequest, match=r"unknown provider 'openai'.*offline"):
        await runs.create_generation(
            pool,
            "alice",
            Spec.model_validate(SPEC),
            provider="openai",
            model=None,
            available_providers=frozenset({"offline", "gemini"}),
        )
    assert await owned(pool, "alice") == []


async def test_create_generation_refuses_a_provider_unavailable_here_and_stores_nothing(
    pool: Pool,
) -> None:
    with pytest.raises(InvalidRequest, match=r"provider 'gemini' is not available"):
        await runs.create_generation(
            pool,
            "alice",
            Spec.model_validate(SPEC),
            provider="gemini",
            model="gemini-2.5-flash",
            available_providers=OFFLINE_ONLY,
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
