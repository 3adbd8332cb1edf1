from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal
from uuid import UUID

import pytest

from service.errors import StoreUnavailable
from service.events import EventType, NewEvent, NewFile, Status
from service.generation import runner, runs
from service.generation.emitter import Emitter, Generate, Job, RunCancelled
from service.generation.generator import make_generate
from service.generation.providers.offline import STAGES, render_phase
from service.generation.runner import LogEmitter, Worker
from service.observe import metrics
from service.settings import Settings
from service.spec import Spec
from service.store import event_log, generations
from service.store.db import Pool, connection
from tests.helpers import (
    SPEC,
    assert_documented,
    assert_well_formed,
    create_generation,
    events_of,
    generation,
    types,
    wait_finished,
    wait_until,
)

OFFLINE: Generate = make_generate(Settings(offline_delay_s=0.0, delta_flush_s=0.0))


@asynccontextmanager
async def started_worker(
    pool: Pool, generate: Generate, *, concurrency: int = 2, poll_s: float = 30.0
) -> AsyncIterator[Worker]:
    worker = Worker(pool, generate, concurrency=concurrency, poll_s=poll_s)
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


async def test_a_created_generation_is_claimed_and_run_to_success(pool: Pool) -> None:
    async with started_worker(pool, OFFLINE) as worker:
        generation_id = await create_generation(pool)
        worker.wake()
        await wait_finished(pool, [generation_id])

    events = await events_of(pool, generation_id)
    assert_well_formed(events, EventType.SUCCEEDED)
    assert events[1]["data"] == {
        "worker": worker.worker_id,
        "attempt": 1,
        "provider": "offline",
        "model": None,
    }

    phases = [
        (event["type"], event["data"]["phase"])
        for event in events
        if event["type"] in (EventType.PHASE_STARTED, EventType.PHASE_COMPLETED)
    ]
    assert phases == [
        (kind, stage)
        for stage in ("core", "models", "api", "tests")
        for kind in (EventType.PHASE_STARTED, EventType.PHASE_COMPLETED)
    ]

    planned = [f for stage in STAGES for f in render_phase(Spec.model_validate(SPEC), stage)]
    saved = [event["data"] for event in events if event["type"] == EventType.FILE_SAVED]
    assert [data["path"] for data in saved] == [file.path for file in planned]

    progress = [event["progress"] for event in events]
    assert progress == sorted(progress), "progress went backwards"
    assert progress[-1] == 1.0

    row = await generation(pool, generation_id)
    assert row.status is Status.SUCCEEDED
    assert row.last_seq == len(events)
    assert row.error is None
    assert row.started_at is not None
    assert row.finished_at is not None
    async with pool.acquire() as conn:
        files = await generations.select_files(conn, "alice", generation_id)
    stored = {f.path: (f.size, f.sha256) for f in files}
    assert stored == {data["path"]: (data["size"], data["sha256"]) for data in saved}


async def test_generated_files_keep_the_field_order_of_the_spec(pool: Pool) -> None:
    spec = {
        "project": "shop",
        "entities": [{"name": "User", "fields": {"email": "str", "age": "int", "id_2": "uuid"}}],
    }
    async with started_worker(pool, OFFLINE) as worker:
        generation_id = await create_generation(pool, spec=spec)
        worker.wake()
        await wait_finished(pool, [generation_id])

    async with pool.acquire() as conn:
        content, _ = await generations.select_file(
            conn, "alice", generation_id, "app/models/user.py"
        )
    assert content.index("email") < content.index("age") < content.index("id_2")
    planned = render_phase(Spec.model_validate(spec), "models")
    assert content == next(f.content for f in planned if f.path == "app/models/user.py")


async def test_a_generation_created_while_the_worker_idles_is_run_once_woken(
    pool: Pool,
) -> None:
    async with started_worker(pool, OFFLINE, poll_s=60.0) as worker:
        await asyncio.sleep(0.1)  # the worker found nothing and now waits out its long poll
        generation_id = await create_generation(pool)
        worker.wake()
        await wait_finished(pool, [generation_id], seconds=10)
    assert (await generation(pool, generation_id)).status is Status.SUCCEEDED


async def test_two_workers_never_run_the_same_generation_twice(pool: Pool) -> None:
    ids = [await create_generation(pool) for _ in range(10)]
    async with (
        started_worker(pool, OFFLINE, concurrency=3, poll_s=0.2) as first,
        started_worker(pool, OFFLINE, concurrency=3, poll_s=0.2) as second,
    ):
        first.wake()
        second.wake()
        await wait_finished(pool, ids, seconds=60)

    for generation_id in ids:
        events = await events_of(pool, generation_id)
        assert_well_formed(events, EventType.SUCCEEDED)
        [started] = [e for e in events if e["type"] == EventType.STARTED]
        assert started["data"]["worker"] in (first.worker_id, second.worker_id)


async def test_a_worker_runs_at_most_its_concurrency_at_once(pool: Pool) -> None:
    release = asyncio.Event()

    async def blocked(job: Job, emitter: Emitter) -> None:
        await release.wait()

    ids = [await create_generation(pool) for _ in range(5)]
    async with started_worker(pool, blocked, concurrency=2, poll_s=0.1) as worker:
        worker.wake()
        await asyncio.sleep(0.5)
        running = [(await generation(pool, g)).status for g in ids].count(Status.RUNNING)
        assert running == 2
        release.set()
        await wait_finished(pool, ids)
    for generation_id in ids:
        assert (await generation(pool, generation_id)).status is Status.SUCCEEDED


class WakeUp(asyncio.Event):
    """The worker's wake-up event, saying when its claim loop has begun to wait on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waited_on = asyncio.Event()

    async def wait(self) -> Literal[True]:
        self.waited_on.set()
        return await super().wait()


async def test_stop_returns_when_a_wake_up_lands_in_the_same_instant(pool: Pool) -> None:
    """A run that ends wakes the claim loop (its slot is free); stop() may come in that very
    instant, as it does when the last run ends just before SIGTERM. On Python 3.11,
    ``asyncio.wait_for`` returns its inner result and drops a cancel that lands once the inner
    wait is done (CPython gh-86296): the claim loop went on polling and stop() never returned.
    Driven: the wake-up's wait completes, then stop() cancels, before the loop runs again."""
    worker = Worker(pool, OFFLINE, concurrency=2, poll_s=30.0)
    wakeup = WakeUp()
    worker._wakeup = wakeup  # the one seam: when the claim loop idles
    worker.start()
    await asyncio.wait_for(wakeup.waited_on.wait(), 10)
    worker.wake()
    await asyncio.sleep(0)  # the wake-up's wait completes; the claim loop has not run yet
    stopping = asyncio.create_task(worker.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    assert stopping in done, "stop() did not return: the claim loop lost its cancel"
    stopping.result()


async def test_a_generator_that_raises_ends_the_run_as_failed_with_its_error(
    pool: Pool,
) -> None:
    async def exploding(job: Job, emitter: Emitter) -> None:
        await emitter.emit(NewEvent(EventType.PHASE_STARTED, "models", 0.3, "Phase 2 of 4"))
        raise RuntimeError("the model said no")

    async with started_worker(pool, exploding) as worker:
        generation_id = await create_generation(pool)
        worker.wake()
        await wait_finished(pool, [generation_id])

    events = await events_of(pool, generation_id)
    assert_well_formed(events, EventType.FAILED)
    assert types(events) == [
        EventType.QUEUED, EventType.STARTED, EventType.PHASE_STARTED, EventType.FAILED,
    ]  # fmt: skip
    failed = events[-1]
    assert failed["data"]["error"] == "the model said no"
    assert_documented(failed)
    assert "the model said no" in failed["message"]
    assert (failed["stage"], failed["progress"]) == ("models", 0.3)
    row = await generation(pool, generation_id)
    assert row.status is Status.FAILED
    assert row.error == "the model said no"


async def test_an_error_without_a_message_is_named_by_its_type(pool: Pool) -> None:
    async def exploding(job: Job, emitter: Emitter) -> None:
        raise KeyError

    async with started_worker(pool, exploding) as worker:
        generation_id = await create_generation(pool)
        worker.wake()
        await wait_finished(pool, [generation_id])

    events = await events_of(pool, generation_id)
    assert events[-1]["type"] == EventType.FAILED
    assert events[-1]["data"]["error"]
    assert (await generation(pool, generation_id)).error == events[-1]["data"]["error"]


async def test_a_cancel_while_running_ends_the_run_as_cancelled(pool: Pool) -> None:
    started = asyncio.Event()
    go_on = asyncio.Event()
    emitted_after_cancel: list[int] = []

    async def slow(job: Job, emitter: Emitter) -> None:
        await emitter.emit(NewEvent(EventType.PHASE_STARTED, "core", 0.1, "Phase 1 of 4"))
        started.set()
        await go_on.wait()
        for i in range(50):
            emitted_after_cancel.append(i)
            await emitter.emit(
                NewEvent(EventType.LLM_DELTA, "core", 0.2, "Writing", {"text": str(i)})
            )

    async with started_worker(pool, slow) as worker:
        generation_id = await create_generation(pool)
        worker.wake()
        await asyncio.wait_for(started.wait(), 10)
        assert await runs.cancel_generation(pool, "alice", generation_id) is Status.RUNNING
        go_on.set()
        await wait_finished(pool, [generation_id])

    events = await events_of(pool, generation_id)
    assert_well_formed(events, EventType.CANCELLED)
    # The run stops at its first emit after the cancel (that event is already durable).
    assert types(events) == [
        EventType.QUEUED, EventType.STARTED, EventType.PHASE_STARTED, EventType.LLM_DELTA,
        EventType.CANCELLED,
    ]  # fmt: skip
    assert emitted_after_cancel == [0]
    assert (events[-1]["stage"], events[-1]["progress"]) == ("core", 0.2)
    assert (await generation(pool, generation_id)).status is Status.CANCELLED


async def test_log_emitter_raises_run_cancelled_once_cancel_was_requested(pool: Pool) -> None:
    generation_id = await create_generation(pool)
    async with pool.acquire() as conn:
        claimed = await generations.claim_next(conn, "test-worker", 60)
    assert claimed is not None
    emitter = LogEmitter(pool, claimed, retry_s=1.0)
    await emitter.emit(NewEvent(EventType.STARTED, "starting", 0.0, "Started"))
    await emitter.emit(NewEvent(EventType.PHASE_STARTED, "core", 0.1, "Phase 1"))
    assert (emitter.stage, emitter.progress) == ("core", 0.1)

    await runs.cancel_generation(pool, "alice", generation_id)

    with pytest.raises(RunCancelled):
        await emitter.emit(NewEvent(EventType.LLM_DELTA, "core", 0.2, "Writing"))
    with pytest.raises(RunCancelled):
        await emitter.emit(NewEvent(EventType.LLM_DELTA, "core", 0.3, "Writing"))
    await emitter.emit(NewEvent(EventType.CANCELLED, emitter.stage, emitter.progress, "Cancelled"))

    events = await events_of(pool, generation_id)
    assert types(events) == [
        EventType.QUEUED, EventType.STARTED, EventType.PHASE_STARTED, EventType.LLM_DELTA,
        EventType.LLM_DELTA, EventType.CANCELLED,
    ]  # fmt: skip
    assert events[-1]["progress"] == 0.3


class FlakyConnection:
    """``runner.connection`` that fails the first ``failures`` times: before the append
    (``after_commit=False``) or after it committed, its answer lost (``after_commit=True``)."""

    def __init__(self, failures: int, *, after_commit: bool = False) -> None:
        self.failures = failures
        self.after_commit = after_commit
        self.calls = 0

    @asynccontextmanager
    async def __call__(self, pool: Pool) -> AsyncIterator[Any]:
        self.calls += 1
        failing = self.calls <= self.failures
        if failing and not self.after_commit:
            raise StoreUnavailable("PostgreSQL is unavailable: simulated outage")
        async with connection(pool) as conn:
            yield conn
        if failing:
            raise StoreUnavailable("PostgreSQL is unavailable: the COMMIT's answer was lost")


async def claimed_emitter(pool: Pool, retry_s: float) -> tuple[UUID, LogEmitter]:
    generation_id = await create_generation(pool)
    async with pool.acquire() as conn:
        claimed = await generations.claim_next(conn, "test-worker", 60)
    assert claimed is not None
    return generation_id, LogEmitter(pool, claimed, retry_s=retry_s)


async def test_log_emitter_retries_while_the_store_is_unavailable_and_appends_once(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    generation_id, emitter = await claimed_emitter(pool, retry_s=5.0)
    flaky = FlakyConnection(2)
    monkeypatch.setattr(runner, "connection", flaky)

    await asyncio.wait_for(
        emitter.emit(
            NewEvent(EventType.STARTED, "starting", 0.01, "Started"),
            NewEvent(EventType.PHASE_STARTED, "core", 0.1, "Phase 1"),
        ),
        5,
    )

    assert flaky.calls == 3
    events = await events_of(pool, generation_id)
    assert types(events) == [EventType.QUEUED, EventType.STARTED, EventType.PHASE_STARTED]
    assert [event["seq"] for event in events] == [1, 2, 3]
    assert (emitter.stage, emitter.progress) == ("core", 0.1)


async def test_log_emitter_retry_after_a_lost_commit_answer_stores_the_batch_once(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    generation_id, emitter = await claimed_emitter(pool, retry_s=5.0)
    await emitter.emit(NewEvent(EventType.STARTED, "starting", 0.01, "Started"))
    flaky = FlakyConnection(2, after_commit=True)
    monkeypatch.setattr(runner, "connection", flaky)
    file = NewFile("app/main.py", "print('hi')\n", "python")
    retries = metrics.APPEND_RETRIES.value("unavailable")
    replays = metrics.IDEMPOTENT_REPLAYS.value()
    appended = metrics.EVENTS_APPENDED.value(EventType.FILE_SAVED.value)

    await asyncio.wait_for(
        emitter.emit(
            file.saved("core", 0.2),
            NewEvent(EventType.PHASE_COMPLETED, "core", 0.25, "Core done", {"phase": "core"}),
            files=[file],
        ),
        5,
    )
    await emitter.emit(NewEvent(EventType.PHASE_STARTED, "models", 0.3, "Phase 2"))

    assert flaky.calls == 4  # two lost answers, the retry that found the batch stored, one more
    assert metrics.APPEND_RETRIES.value("unavailable") - retries == 2
    # The first lost answer's COMMIT stored the batch; both retries found it by its keys.
    assert metrics.IDEMPOTENT_REPLAYS.value() - replays == 2
    assert metrics.EVENTS_APPENDED.value(EventType.FILE_SAVED.value) - appended == 1
    events = await events_of(pool, generation_id)
    assert types(events) == [
        EventType.QUEUED, EventType.STARTED, EventType.FILE_SAVED, EventType.PHASE_COMPLETED,
        EventType.PHASE_STARTED,
    ]  # fmt: skip
    assert [event["seq"] for event in events] == [1, 2, 3, 4, 5]
    async with pool.acquire() as conn:
        [stored] = await generations.select_files(conn, "alice", generation_id)
        head = await event_log.select_head(conn, generation_id)
    assert (stored.path, stored.seq, stored.sha256) == (file.path, 3, file.sha256)
    assert head.last_seq == 5


async def test_log_emitter_gives_up_after_its_retry_window_and_stores_nothing(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    generation_id, emitter = await claimed_emitter(pool, retry_s=0.3)
    flaky = FlakyConnection(10**6)
    monkeypatch.setattr(runner, "connection", flaky)

    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(
            emitter.emit(NewEvent(EventType.STARTED, "starting", 0.01, "Started")), 5
        )

    assert flaky.calls >= 2, "it never retried"
    assert types(await events_of(pool, generation_id)) == [EventType.QUEUED]


async def test_one_owners_backlog_delays_anothers_new_run_by_at_most_one_slot(
    pool: Pool,
) -> None:
    async def half_a_second_of_work(job: Job, emitter: Emitter) -> None:
        await asyncio.sleep(0.5)

    backlog = [await create_generation(pool, "alice") for _ in range(40)]
    async with started_worker(pool, half_a_second_of_work, concurrency=2, poll_s=0.1) as worker:
        worker.wake()

        async def both_slots_busy() -> bool:
            states = [(await generation(pool, g)).status for g in backlog[:4]]
            return states.count(Status.RUNNING) == 2

        await wait_until(both_slots_busy, "alice's runs fill both slots")
        created_at = time.monotonic()
        newcomer = await create_generation(pool, "bob")
        worker.wake()

        async def started() -> bool:
            return EventType.STARTED in types(await events_of(pool, newcomer))

        await wait_until(started, "bob's run starts", seconds=20)
        waited_s = time.monotonic() - created_at
        still_queued = [(await generation(pool, g)).status for g in backlog].count(Status.QUEUED)

    print(f"bob's run started {waited_s:.2f} s after it was created, behind alice's 40")
    # Oldest first, bob would wait for alice's whole backlog: 40 runs / 2 slots * 0.5 s = 10 s.
    assert waited_s < 3.0
    assert still_queued >= 30
