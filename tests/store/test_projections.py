from __future__ import annotations

from uuid import UUID, uuid4

from pydantic import SecretStr

from service.events import EventType, NewEvent
from service.generation.runs import queued_event
from service.store import event_log, generations, projections
from service.store.db import Pool
from tests.conftest import AppFactory, free_socket
from tests.helpers import SPEC, wait_for_status


async def differences(pool: Pool) -> list[projections.Difference]:
    async with pool.acquire() as conn:
        return await projections.select_differences(conn)


async def resumed_by_hand(pool: Pool) -> UUID:
    """A run that was interrupted and resumed: its log says so, written through the append."""
    generation_id = uuid4()
    async with pool.acquire() as conn:
        await generations.insert_generation(
            conn, generation_id, "alice", SPEC, "offline", None, queued_event()
        )
        for event in (
            NewEvent(EventType.STARTED, "starting", 0.0, "Started"),
            NewEvent(EventType.PHASE_STARTED, "core", 0.1, "Phase 1"),
            NewEvent(EventType.RESUMED, "core", 0.1, "Resumed by another worker"),
            NewEvent(EventType.PHASE_COMPLETED, "core", 0.4, "Phase 1 done"),
            NewEvent(EventType.SUCCEEDED, "done", 1.0, "Done"),
        ):
            await event_log.append(conn, generation_id, [event])
    return generation_id


async def test_the_log_rebuilds_exactly_the_live_projection_of_every_kind_of_run(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    closed = free_socket()
    unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    settings = {"gemini_api_key": SecretStr("k"), "gemini_base_url": unreachable,
                "gemini_attempts": 1}  # fmt: skip
    async with app_factory(**settings) as running, running.client(api_key) as client:
        succeeded = (await client.post("/api/generations", json={"spec": SPEC})).json()["id"]
        failed = (
            await client.post("/api/generations", json={"spec": SPEC, "provider": "gemini"})
        ).json()["id"]
        await wait_for_status(client, succeeded)
        await wait_for_status(client, failed)
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        cancelled = (await client.post("/api/generations", json={"spec": SPEC})).json()["id"]
        queued = (await client.post("/api/generations", json={"spec": SPEC})).json()["id"]
        assert (await client.post(f"/api/generations/{cancelled}/cancel")).status_code == 202
        states = {
            name: (await client.get(f"/api/generations/{generation_id}")).json()["status"]
            for name, generation_id in [("succeeded", succeeded), ("failed", failed),
                                        ("cancelled", cancelled), ("queued", queued)]
        }  # fmt: skip
    await resumed_by_hand(pool)

    assert states == {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled",
                      "queued": "queued"}  # fmt: skip
    assert await differences(pool) == []


async def test_a_planted_corruption_is_found_and_rebuilt_from_the_log(pool: Pool) -> None:
    generation_id = await resumed_by_hand(pool)
    async with pool.acquire() as conn:
        before = await conn.fetchrow("SELECT * FROM generations WHERE id = $1", generation_id)
        await conn.execute(
            "UPDATE generations SET status = 'running', progress = 0.25, last_seq = 3,"
            " finished_at = NULL WHERE id = $1",
            generation_id,
        )

    found = await differences(pool)

    assert {(d.generation_id, d.column, d.projected, d.rebuilt) for d in found} == {
        (generation_id, "status", "running", "succeeded"),
        (generation_id, "progress", 0.25, 1.0),
        (generation_id, "last_seq", 3, 6),
        (generation_id, "finished", False, True),
    }
    async with pool.acquire() as conn:
        assert await projections.rebuild(conn) == 1
        after = await conn.fetchrow("SELECT * FROM generations WHERE id = $1", generation_id)
        assert await projections.rebuild(conn) == 0
    assert await differences(pool) == []
    assert before is not None
    assert after is not None
    for column in ("status", "stage", "progress", "message", "last_seq", "error", "started_at"):
        assert after[column] == before[column], column
    assert after["finished_at"] is not None
