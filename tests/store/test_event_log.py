from __future__ import annotations

import asyncio
import json
from uuid import UUID, uuid4

import pytest

from service.errors import GenerationFinished, NotFound
from service.events import EventType, NewEvent, NewFile
from service.generation.runs import queued_event
from service.store import event_log, generations
from service.store.db import Pool


async def new_generation(pool: Pool, owner: str = "alice") -> UUID:
    generation_id = uuid4()
    async with pool.acquire() as conn:
        await generations.insert_generation(
            conn, generation_id, owner, {"project": "p", "entities": []}, "offline", None,
            queued_event(),
        )  # fmt: skip
    return generation_id


def delta(n: int) -> NewEvent:
    return NewEvent(EventType.LLM_DELTA, "models", 0.5, f"chunk {n}", {"n": n})


async def all_seqs(pool: Pool, generation_id: UUID) -> list[int]:
    async with pool.acquire() as conn:
        events = await event_log.select_events_after(conn, generation_id, 0, 100_000)
    return [event.seq for event in events]


async def test_append_numbers_events_from_one_and_renders_the_contract_shape(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    async with pool.acquire() as conn:
        appended = await event_log.append(conn, generation_id, [delta(1), delta(2)])
        events = await event_log.select_events_after(conn, generation_id, 0, 10)
    assert appended.last_seq == 3
    assert [e.seq for e in events] == [1, 2, 3]
    body = json.loads(events[2].json)
    assert list(body) == [
        "generation_id", "seq", "type", "status", "stage", "progress", "message", "timestamp",
        "data",
    ]  # fmt: skip
    assert body["generation_id"] == str(generation_id)
    assert body["seq"] == 3
    assert body["type"] == "llm.delta"
    assert body["status"] == "running"
    assert body["progress"] == 0.5
    assert body["data"] == {"n": 2}
    assert body["timestamp"].endswith("Z")


async def test_concurrent_appenders_on_one_generation_never_gap_or_repeat(pool: Pool) -> None:
    generation_id = await new_generation(pool)

    async def writer(w: int) -> None:
        for i in range(25):
            async with pool.acquire() as conn:
                await event_log.append(conn, generation_id, [delta(w * 100 + i)] * (1 + i % 3))

    await asyncio.gather(*(writer(w) for w in range(8)))
    expected = 1 + sum(1 + i % 3 for i in range(25)) * 8
    assert await all_seqs(pool, generation_id) == list(range(1, expected + 1))


async def test_concurrent_appenders_on_many_generations_each_stay_gap_free(pool: Pool) -> None:
    ids = [await new_generation(pool) for _ in range(6)]

    async def writer(generation_id: UUID) -> None:
        for i in range(30):
            async with pool.acquire() as conn:
                await event_log.append(conn, generation_id, [delta(i)])

    await asyncio.gather(*(writer(g) for g in ids for _ in range(2)))
    for generation_id in ids:
        assert await all_seqs(pool, generation_id) == list(range(1, 62))


async def test_nothing_is_appended_after_the_terminal_event(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    done = NewEvent(EventType.SUCCEEDED, "done", 1.0, "done")
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [done])
        with pytest.raises(GenerationFinished):
            await event_log.append(conn, generation_id, [delta(1)])
        head = await event_log.select_head(conn, generation_id)
    assert head.last_seq == 2
    assert head.is_finished


async def test_append_to_an_unknown_generation_is_not_found(pool: Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(NotFound):
            await event_log.append(conn, uuid4(), [delta(1)])


async def test_files_are_stored_in_the_same_transaction_as_their_event(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    file = NewFile("app/models/user.py", "class User: ...\n", "python")
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [delta(1), file.saved("models", 0.5)], [file])
        files = await generations.select_files(conn, "alice", generation_id)
    assert [(f.path, f.size, f.sha256, f.seq) for f in files] == [
        (file.path, file.size, file.sha256, 3)
    ]


async def test_a_failed_append_leaves_no_trace(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    file = NewFile("a.py", "x = 1\n", "python")
    async with pool.acquire() as conn:
        with pytest.raises(ValueError, match=r"no file\.saved event"):
            await event_log.append(conn, generation_id, [delta(1)], [file])
    assert await all_seqs(pool, generation_id) == [1]


async def test_append_notifies_with_generation_and_last_seq_only(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    received: asyncio.Queue[object] = asyncio.Queue()

    def on_notify(*args: object) -> None:
        received.put_nowait(args[3])

    async with pool.acquire() as listener:
        await listener.add_listener(event_log.EVENTS_CHANNEL, on_notify)
        try:
            async with pool.acquire() as conn:
                await event_log.append(conn, generation_id, [delta(1), delta(2)])
            payload = await asyncio.wait_for(received.get(), 5)
        finally:
            await listener.remove_listener(event_log.EVENTS_CHANNEL, on_notify)
    assert payload == f"{generation_id}:3"


async def test_keyset_pages_cover_the_log_exactly_once(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    async with pool.acquire() as conn:
        await event_log.append(conn, generation_id, [delta(i) for i in range(20)])
        seen: list[int] = []
        after = 0
        while page := await event_log.select_events_after(conn, generation_id, after, 7):
            seen.extend(e.seq for e in page)
            after = page[-1].seq
    assert seen == list(range(1, 22))
