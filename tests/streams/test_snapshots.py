"""``streams/snapshots.py``: a snapshot read from the log, against the reduction of every event.

The snapshot reads only the milestones and counts the deltas between them by their seqs;
reducing every stored event, deltas included, must give the same state, whatever the run.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from service.events import EventType, NewEvent, NewFile
from service.snapshot import MODEL_TEXT_CHARS, Reduction, SnapshotData
from service.store import event_log
from service.store.db import Pool
from service.streams import snapshots
from tests.conftest import RunningApp
from tests.helpers import (
    STARTED,
    create_generation,
    create_via_api,
    events_of,
    wait_for_status,
)


def reduced(events: list[dict[str, Any]]) -> SnapshotData:
    reduction = Reduction()
    for event in events:
        reduction.apply(event)
    return reduction.snapshot()


async def test_a_snapshot_of_a_finished_run_is_the_reduction_of_all_its_events(
    running: RunningApp, api_key: str, pool: Pool
) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        await wait_for_status(client, generation_id)
    events = await events_of(pool, UUID(generation_id))

    taken = await snapshots.take(pool, UUID(generation_id))

    assert taken is not None
    assert taken.is_final
    assert taken.seq == len(events)
    data = json.loads(taken.json)
    assert data == reduced(events)
    assert data["last_event"] == events[-1]
    assert data["chain"] == events[-1]["chain"]
    assert data["status"] == "succeeded"
    assert data["progress"] == 1.0
    assert [phase["status"] for phase in data["phases"]] == ["completed"] * len(data["phases"])
    assert len(data["phases"]) >= 4
    assert sum(data["counts"].values()) == len(events)
    assert (
        data["counts"][EventType.LLM_DELTA] == sum(phase["deltas"] for phase in data["phases"]) > 0
    )
    saved = {event["data"]["path"] for event in events if event["type"] == "file.saved"}
    assert {file["path"] for file in data["files"]} == saved


async def test_a_snapshot_at_every_seq_of_a_run_agrees_with_the_reduction(pool: Pool) -> None:
    """Deltas with text longer and shorter than the snapshot's tail, deltas before the first
    phase and at the end, a restarted phase, a file saved twice: after each append."""
    generation_id = await create_generation(pool, "alice")
    file = NewFile("app/main.py", "print(1)\n", "python")
    saved = [file.saved("core", 0.5)], [file]
    batches: list[tuple[list[NewEvent], list[NewFile]]] = [
        ([STARTED], []),
        ([delta_text("early ")], []),
        ([phase_started("core", 1)], []),
        ([delta_text("x" * 1500) for _ in range(3)], []),
        ([phase_started("core", 2)], []),
        ([delta_text(f"{n:04d}") for n in range(1000)], []),  # pages of the tail and a probe
        saved,
        saved,
        ([phase_completed("core")], []),
        ([delta_text("")], []),
        ([NewEvent(EventType.FAILED, "done", 1.0, "failed", {"error": "boom"})], []),
    ]
    for events_of_batch, files in batches:
        async with pool.acquire() as conn:
            await event_log.append(conn, generation_id, events_of_batch, files)
        events = await events_of(pool, generation_id)
        taken = await snapshots.take(pool, generation_id)
        assert taken is not None
        assert json.loads(taken.json) == reduced(events), f"after seq {len(events)}"

    assert taken is not None
    data = json.loads(taken.json)
    assert data["error"] == "boom"
    (core,) = data["phases"]
    assert (core["starts"], core["status"], core["deltas"]) == (2, "completed", 1003)
    assert data["files"][0]["versions"] == 2
    assert data["model_text_truncated"]
    assert len(data["model_text"]) == MODEL_TEXT_CHARS


def delta_text(text: str) -> NewEvent:
    return NewEvent(EventType.LLM_DELTA, "core", 0.3, "Writing", {"phase": "core", "text": text})


def phase_started(phase: str, attempt: int) -> NewEvent:
    return NewEvent(
        EventType.PHASE_STARTED,
        phase,
        0.2,
        f"{phase} started",
        {"phase": phase, "number": 1, "of": 4, "attempt": attempt, "provider": "x", "model": None},
    )


def phase_completed(phase: str) -> NewEvent:
    return NewEvent(
        EventType.PHASE_COMPLETED,
        phase,
        0.7,
        f"{phase} done",
        {
            "phase": phase, "files": 1, "attempts": 2, "prompt_tokens": 10, "output_tokens": 20,
            "duration_ms": 5, "provider": "x", "model": None,
        },
    )  # fmt: skip
