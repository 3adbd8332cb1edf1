"""``streams/snapshots.py``: a snapshot read from the log, against the reduction of every event.

The snapshot reads only the milestones and counts the deltas between them by their seqs;
reducing every stored event, deltas included, must give the same state, whatever the run.
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from service.events import EventType, NewEvent, NewFile
from service.generation import runs
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
    phase and at the end, a restarted phase, a file saved twice, a model's API refusing and
    keeping silent, a stall and a resume, a failure retried: after each append."""
    generation_id = await create_generation(pool, "alice")
    file = NewFile("app/main.py", "print(1)\n", "python")
    saved = [file.saved("core", 0.5)], [file]
    steps: list[tuple[list[NewEvent], list[NewFile]] | None] = [  # None: the owner retries
        ([STARTED], []),
        ([delta_text("early ")], []),
        ([phase_started("core", 1)], []),
        ([delta_text("x" * 1500) for _ in range(3)], []),
        ([note(EventType.LLM_RETRYING, wait_s=1.0), note(EventType.LLM_WAITING, waited_s=9.0)], []),
        ([phase_started("core", 2)], []),
        ([delta_text(f"{n:04d}") for n in range(1000)], []),  # pages of the tail and a probe
        saved,
        saved,
        ([phase_completed("core")], []),
        ([delta_text("")], []),
        ([phase_started("models", 1)], []),
        ([note(EventType.STALLED, silent_s=12.0)], []),
        ([note(EventType.RESUMED, completed_phases=[])], []),
        ([NewEvent(EventType.FAILED, "done", 1.0, "failed", {"error": "boom"})], []),
        None,
        ([note(EventType.RESUMED, completed_phases=["core"]), phase_started("models", 2)], []),
    ]  # fmt: skip
    for step in steps:
        if step is None:
            await runs.retry_generation(pool, "alice", generation_id)
        else:
            async with pool.acquire() as conn:
                await event_log.append(conn, generation_id, *step)
        events = await events_of(pool, generation_id)
        taken = await snapshots.take(pool, generation_id)
        assert taken is not None
        assert json.loads(taken.json) == reduced(events), f"after seq {len(events)}"

    assert taken is not None
    data = json.loads(taken.json)
    assert data["error"] is None, "the retry cleared it"
    core, models = data["phases"]
    assert (core["starts"], core["status"], core["deltas"]) == (2, "completed", 1003)
    core_starts = [e for e in events if e["type"] == "phase.started" and e["stage"] == "core"]
    assert core["first_started_at"] == core_starts[0]["timestamp"]
    assert core["started_at"] == core_starts[1]["timestamp"]
    assert (models["starts"], models["status"]) == (2, "running")
    assert data["files"][0]["versions"] == 2
    assert data["model_text_truncated"]
    assert len(data["model_text"]) == MODEL_TEXT_CHARS
    marked = [(mark["type"], mark["stage"], mark["data"].get("attempt")) for mark in data["marks"]]
    assert marked == [
        ("llm.retrying", "core", 1),
        ("llm.waiting", "core", 1),
        ("phase.started", "core", 2),  # the restart
        ("generation.stalled", "core", 1),
        ("generation.resumed", "core", 1),
        ("generation.retried", "queued", 1),  # no worker claimed it: the retry takes 1
        ("generation.resumed", "core", 1),
        ("phase.started", "models", 2),  # started again after the retry
    ]
    by_seq = {event["seq"]: event for event in events}
    for mark in data["marks"]:
        event = by_seq[mark["seq"]]
        assert mark == {key: event[key] for key in ("seq", "type", "timestamp", "stage", "data")}
    assert data["marks_dropped"] == 0


def delta_text(text: str) -> NewEvent:
    return NewEvent(EventType.LLM_DELTA, "core", 0.3, "Writing", {"phase": "core", "text": text})


def note(kind: EventType, **data: Any) -> NewEvent:
    """An event of the run's own record (a retry, a wait, a stall, a resume) during core."""
    return NewEvent(kind, "core", 0.3, kind, {"phase": "core", "attempt": 1, **data})


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
