from __future__ import annotations

from uuid import UUID, uuid4

from pydantic import SecretStr

from service.events import EventType, NewEvent
from service.generation import runs
from service.generation.runs import queued_event
from service.store import event_log, generations, projections
from service.store.db import Pool
from tests.conftest import AppFactory, free_socket
from tests.helpers import (
    SPEC,
    STARTED,
    append,
    finished_generation,
    generation,
    new_generation,
    wait_for_status,
)

FAILED = NewEvent(EventType.FAILED, "core", 0.3, "Failed", {"error": "boom"})


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


# --- the log itself (issue 12, finding 7: a gap or a double terminal went unreported) ---------
#
# finished_generation()'s log: seq 1 queued, 2 started, 3 llm.delta, 4 file.saved, 5 succeeded.
# Each defect is planted by hand, as nothing genstream runs can write one.

INSERT_EVENT = (
    "INSERT INTO generation_events (generation_id, seq, type, status, stage, progress, message,"
    " payload) VALUES ($1, $2, $3, $4, 'done', 1, 'planted', '{}')"
)


async def log_defects(pool: Pool) -> set[tuple[UUID, int, str, str | None, int | None]]:
    async with pool.acquire() as conn:
        found = await projections.select_log_defects(conn)
    return {(d.generation_id, d.seq, d.defect, d.type, d.other_seq) for d in found}


async def test_a_sound_log_of_every_kind_has_no_defect(pool: Pool) -> None:
    await finished_generation(pool)
    await resumed_by_hand(pool)
    await new_generation(pool)  # no terminal event, and its row says it has not finished
    running = await new_generation(pool)
    await append(pool, running, STARTED)

    assert await log_defects(pool) == set()


async def test_a_seq_gap_is_reported_at_the_seq_after_it(pool: Pool) -> None:
    generation_id = await finished_generation(pool)
    starts_late = await finished_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM generation_events WHERE generation_id = $1 AND seq IN (2, 3)",
            generation_id,
        )
        await conn.execute(
            "DELETE FROM generation_events WHERE generation_id = $1 AND seq = 1", starts_late
        )

    assert await log_defects(pool) == {
        (generation_id, 4, "gap", "file.saved", 1),
        (starts_late, 2, "gap", "generation.started", 0),
    }


async def test_events_after_the_terminal_one_and_a_second_terminal_are_reported(
    pool: Pool,
) -> None:
    after = await finished_generation(pool)
    twice = await finished_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(INSERT_EVENT, after, 6, "llm.delta", "running")
        await conn.execute(INSERT_EVENT, twice, 6, "generation.failed", "failed")
        await conn.execute(INSERT_EVENT, twice, 7, "llm.delta", "running")

    assert await log_defects(pool) == {
        (after, 6, "after_terminal", "llm.delta", 5),
        (twice, 6, "second_terminal", "generation.failed", 5),
        (twice, 7, "after_terminal", "llm.delta", 6),
    }


async def test_a_retried_log_is_sound_and_a_retry_anywhere_else_is_reported(pool: Pool) -> None:
    """generation.retried may follow a failed or cancelled attempt, and the log goes on; the
    row's error is the last attempt's (none once retried)."""
    retried = await new_generation(pool)
    await append(pool, retried, STARTED, FAILED)
    await runs.retry_generation(pool, "alice", retried)
    await append(pool, retried, STARTED)
    misplaced = await finished_generation(pool)  # succeeded at seq 5
    running = await new_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(INSERT_EVENT, misplaced, 6, "generation.retried", "queued")
        await conn.execute(INSERT_EVENT, running, 2, "generation.retried", "queued")
        await conn.execute("UPDATE generations SET last_seq = 2 WHERE id = $1", running)

    assert await log_defects(pool) == {
        (misplaced, 6, "after_terminal", "generation.retried", 5),
        (misplaced, 6, "misplaced_retry", "generation.retried", 5),
        (running, 2, "misplaced_retry", "generation.retried", 1),
    }
    assert retried not in {d.generation_id for d in await differences(pool)}
    row = await generation(pool, retried)
    assert (row.status, row.error, row.last_seq) == ("running", None, 5)


async def test_a_finished_row_over_a_log_without_a_terminal_event_is_reported(
    pool: Pool,
) -> None:
    lost_its_end = await finished_generation(pool)
    no_events = await new_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM generation_events WHERE generation_id = $1 AND seq = 5", lost_its_end
        )
        await conn.execute("DELETE FROM generation_events WHERE generation_id = $1", no_events)
        await conn.execute(
            "UPDATE generations SET status = 'cancelled', finished_at = now() WHERE id = $1",
            no_events,
        )

    assert await log_defects(pool) == {
        (lost_its_end, 4, "missing_terminal", None, None),
        (no_events, 0, "missing_terminal", None, None),
    }


async def test_a_type_outside_the_vocabulary_is_reported(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(INSERT_EVENT, generation_id, 2, "llm.delta\nid: 999", "running")
        await conn.execute("UPDATE generations SET last_seq = 2 WHERE id = $1", generation_id)

    assert await log_defects(pool) == {
        (generation_id, 2, "unknown_type", "llm.delta\nid: 999", None)
    }
