"""Runs survive their workers: release on stop, lease expiry, attempts limit, cancels, renewal.

Every test runs real workers against a real PostgreSQL with the real offline provider; a
worker "dies" by having its tasks cancelled without its leases being released.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from types import SimpleNamespace
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from service.errors import LeaseLost
from service.events import EventType, NewEvent, NewFile, Status
from service.generation import runner, runs
from service.generation.emitter import Emitter, Generate, Job
from service.generation.generator import make_generate
from service.generation.providers.offline import STAGES, render_phase
from service.generation.runner import LogEmitter, Worker, sweep_stalled
from service.settings import Settings
from service.spec import Spec
from service.store import event_log, generations
from service.store.db import Pool
from service.store.generations import Claimed
from service.store.listener import Listener
from tests.helpers import (
    SPEC,
    assert_documented,
    assert_well_formed,
    create_generation,
    events_of,
    generation,
    insert_running_generation,
    types,
    wait_finished,
    wait_until,
)


def offline(delay_s: float, **settings: Any) -> Generate:
    return make_generate(Settings(**{"offline_delay_s": delay_s, "delta_flush_s": 0, **settings}))


@asynccontextmanager
async def running_worker(
    pool: Pool,
    generate: Generate,
    *,
    lease_s: float = 30.0,
    poll_s: float = 30.0,
    attempts_max: int = 5,
) -> AsyncIterator[Worker]:
    worker = Worker(
        pool,
        generate,
        concurrency=2,
        poll_s=poll_s,
        lease_s=lease_s,
        attempts_max=attempts_max,
    )
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop()


@asynccontextmanager
async def listening(
    database_url: str, handlers: Mapping[str, Callable[[str], None]]
) -> AsyncIterator[Listener]:
    listener = Listener(database_url, handlers, lambda: None)
    listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        yield listener
    finally:
        await listener.stop()


def signalling(generate: Generate, phase_done: asyncio.Event) -> Generate:
    """``generate`` unchanged, but ``phase_done`` is set once a phase.completed is durable."""

    class Spy:
        def __init__(self, inner: Emitter) -> None:
            self._inner = inner

        async def emit(self, *events: NewEvent, files: Sequence[NewFile] = ()) -> None:
            await self._inner.emit(*events, files=files)
            if any(event.type is EventType.PHASE_COMPLETED for event in events):
                phase_done.set()

    async def spied(job: Job, emitter: Emitter) -> None:
        await generate(job, Spy(emitter))

    return spied


async def wait_for_event(
    pool: Pool, generation_id: UUID, kind: EventType, seconds: float = 10.0
) -> list[dict[str, Any]]:
    """The log as soon as it holds an event of ``kind``."""

    async def holding() -> list[dict[str, Any]] | None:
        events = await events_of(pool, generation_id)
        return events if kind in types(events) else None

    return await wait_until(holding, f"a {kind} event", seconds)


async def lease_of(pool: Pool, generation_id: UUID) -> tuple[str | None, datetime | None, datetime]:
    """(claimed_by, lease_expires_at, the database's clock now)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT claimed_by, lease_expires_at, clock_timestamp() AS now "
            "FROM generations WHERE id = $1",
            generation_id,
        )
    assert row is not None
    return row["claimed_by"], row["lease_expires_at"], row["now"]


async def wait_lease_expired(pool: Pool, generation_id: UUID) -> None:
    """Until the run's lease has run out by the database's clock (claims compare with it)."""

    async def expired() -> bool:
        _, expires_at, now = await lease_of(pool, generation_id)
        return expires_at is None or expires_at <= now

    await wait_until(expired, "the lease runs out", seconds=10)


async def started_and_abandoned(pool: Pool, generation_id: UUID, worker_id: str) -> Claimed:
    """A worker that claimed the run, logged its start and died: its short lease has run out."""
    claimed = await claim_by_hand(pool, worker_id, 0.1)
    await LogEmitter(pool, claimed, retry_s=1.0).emit(
        NewEvent(EventType.STARTED, "starting", 0.01, "Started")
    )
    await wait_lease_expired(pool, generation_id)
    return claimed


async def claim_by_hand(pool: Pool, worker_id: str, lease_s: float) -> Claimed:
    async with pool.acquire() as conn:
        claimed = await generations.claim_next(conn, worker_id, lease_s)
    assert claimed is not None
    return claimed


async def stored_files(pool: Pool, generation_id: UUID) -> dict[str, str]:
    async with pool.acquire() as conn:
        return dict(await generations.select_file_contents(conn, "alice", generation_id))


def planned_files() -> dict[str, str]:
    spec = Spec.model_validate(SPEC)
    return {f.path: f.content for stage in STAGES for f in render_phase(spec, stage)}


def completed_stages(events: Sequence[dict[str, Any]]) -> list[str]:
    return [e["data"]["phase"] for e in events if e["type"] == EventType.PHASE_COMPLETED]


def timestamp(event: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(event["timestamp"])


def assert_resumed_run_is_complete(
    events: Sequence[dict[str, Any]], before: Sequence[dict[str, Any]], resumer: Worker
) -> None:
    """Succeeded once, resumed once after ``before``, no phase redone, every file once."""
    assert_well_formed(events, EventType.SUCCEEDED)
    assert events[: len(before)] == list(before), "the earlier events were changed"
    assert types(events).count(EventType.RESUMED) == 1
    at = len(before)
    if events[at]["type"] == EventType.STALLED:  # taken off a worker whose lease ran out
        assert_documented(events[at])
        assert events[at]["data"]["worker"] != resumer.worker_id
        at += 1
    resumed = events[at]
    assert resumed["type"] == EventType.RESUMED
    assert_documented(resumed)
    assert resumed["data"] == {
        "worker": resumer.worker_id,
        "attempt": 2,
        "completed_phases": completed_stages(before),
        "gap_s": resumed["data"]["gap_s"],  # how long it stood: checked where it matters
    }
    assert resumed["data"]["gap_s"] >= 0
    assert Counter(completed_stages(events)) == dict.fromkeys(STAGES, 1)
    assert completed_stages(events) == list(STAGES)
    for stage in STAGES:
        paths = [
            e["data"]["path"]
            for e in events
            if e["type"] == EventType.FILE_SAVED and e["stage"] == stage
        ]
        assert len(paths) == len(set(paths)), f"a file of {stage} was saved twice: {paths}"
    spec = Spec.model_validate(SPEC)
    saved = [e["data"]["path"] for e in events if e["type"] == EventType.FILE_SAVED]
    assert saved == [f.path for stage in STAGES for f in render_phase(spec, stage)]
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress), "progress went backwards across the resume"


async def test_a_stopped_worker_releases_its_run_and_another_resumes_it_at_once(
    pool: Pool,
) -> None:
    phase_done = asyncio.Event()
    first = Worker(pool, signalling(offline(0.002), phase_done), concurrency=2, poll_s=30.0)
    first.start()
    try:
        generation_id = await create_generation(pool)
        first.wake()
        await asyncio.wait_for(phase_done.wait(), 10)
    finally:
        await first.stop()

    before = await events_of(pool, generation_id)
    assert completed_stages(before), "the first worker completed no phase"
    assert completed_stages(before) != list(STAGES), "the first worker finished every phase"
    assert not set(types(before)) & {EventType.SUCCEEDED, EventType.FAILED}
    claimed_by, lease_expires_at, _ = await lease_of(pool, generation_id)
    assert (claimed_by, lease_expires_at) == (None, None), "stop() kept the lease"

    # The first worker's lease was 30 s: only the release lets the second one claim the run
    # within the bound below.
    async with running_worker(pool, offline(0.0)) as second:
        await wait_finished(pool, [generation_id], seconds=10)

    events = await events_of(pool, generation_id)
    assert_resumed_run_is_complete(events, before, second)
    assert await stored_files(pool, generation_id) == planned_files()
    assert (await generation(pool, generation_id)).status is Status.SUCCEEDED


async def test_a_worker_released_by_shutdown_is_woken_by_the_release_notify(
    pool: Pool, database_url: str
) -> None:
    """A second worker already idling (long poll) is woken by the first one's release."""
    phase_done = asyncio.Event()
    second = Worker(pool, offline(0.0), concurrency=2, poll_s=30.0)
    async with listening(database_url, {generations.JOBS_CHANNEL: second.wake}):
        first = Worker(pool, signalling(offline(0.002), phase_done), concurrency=2, poll_s=30.0)
        first.start()
        try:
            generation_id = await create_generation(pool)
            first.wake()
            await asyncio.wait_for(phase_done.wait(), 10)
            second.start()  # finds the run held by the first worker, then idles
            await asyncio.sleep(0.1)
        finally:
            await first.stop()
        before = await events_of(pool, generation_id)
        try:
            await wait_finished(pool, [generation_id], seconds=10)
        finally:
            await second.stop()

    events = await events_of(pool, generation_id)
    assert_resumed_run_is_complete(events, before, second)
    assert await stored_files(pool, generation_id) == planned_files()


async def test_a_dead_worker_keeps_its_run_until_the_lease_expires_and_is_fenced_off(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    claims: list[Claimed] = []
    real_claim_next = generations.claim_next
    real_release = generations.release_leases

    async def recording_claim_next(conn: Any, worker_id: str, lease_s: float) -> Claimed | None:
        claimed = await real_claim_next(conn, worker_id, lease_s)
        if claimed is not None:
            claims.append(claimed)
        return claimed

    phase_done = asyncio.Event()
    dead = Worker(
        pool, signalling(offline(0.002), phase_done), concurrency=2, poll_s=30.0, lease_s=0.6
    )

    async def release_unless_dead(conn: Any, worker_id: str, ids: list[UUID]) -> None:
        if worker_id != dead.worker_id:  # a killed process releases nothing
            await real_release(conn, worker_id, ids)

    monkeypatch.setattr(generations, "claim_next", recording_claim_next)
    monkeypatch.setattr(generations, "release_leases", release_unless_dead)

    dead.start()
    try:
        generation_id = await create_generation(pool)
        dead.wake()
        await asyncio.wait_for(phase_done.wait(), 10)
    finally:
        await dead.stop()  # its tasks die; the lease stays
    [first_claim] = claims
    assert first_claim.attempt == 1

    before = await events_of(pool, generation_id)
    claimed_by, lease_expires_at, now = await lease_of(pool, generation_id)
    assert claimed_by == dead.worker_id
    assert lease_expires_at is not None
    assert lease_expires_at > now, "the lease had already expired: the test proves nothing"

    gate = asyncio.Event()
    fast = offline(0.0)

    async def gated(job: Job, emitter: Emitter) -> None:
        await gate.wait()
        await fast(job, emitter)

    async with running_worker(pool, gated, poll_s=0.05) as successor:
        with_resume = await wait_for_event(pool, generation_id, EventType.RESUMED, seconds=10)
        [resumed] = [e for e in with_resume if e["type"] == EventType.RESUMED]
        assert timestamp(resumed) > lease_expires_at, "the run was taken before its lease ran out"

        # The dead worker wakes up and writes with its old claim: fenced off, nothing stored.
        late = LogEmitter(pool, first_claim, retry_s=1.0, stage="models")
        with pytest.raises(LeaseLost):
            await late.emit(NewEvent(EventType.LLM_DELTA, "models", 0.5, "Writing", {"text": "x"}))
        stray = NewFile("app/late.py", "print('late')\n", "python")
        with pytest.raises(LeaseLost):
            await late.emit(
                stray.saved("models", 0.5),
                NewEvent(EventType.PHASE_COMPLETED, "models", 0.5, "done", {"phase": "models"}),
                files=[stray],
            )
        with pytest.raises(LeaseLost):
            await late.emit(NewEvent(EventType.SUCCEEDED, "done", 1.0, "Generation finished"))
        assert await events_of(pool, generation_id) == with_resume
        assert "app/late.py" not in await stored_files(pool, generation_id)

        gate.set()
        await wait_finished(pool, [generation_id], seconds=10)

    assert [claim.attempt for claim in claims] == [1, 2]
    events = await events_of(pool, generation_id)
    assert_resumed_run_is_complete(events, before, successor)
    assert await stored_files(pool, generation_id) == planned_files()
    # The log says the first worker fell silent, just before the resume that followed it.
    stalled = events[len(before)]
    assert stalled["type"] == EventType.STALLED
    assert (stalled["data"]["worker"], stalled["data"]["attempt"]) == (dead.worker_id, 1)
    # Swept once the lease ran out: silent at least from the last event to the lease's end
    # (not the whole 0.6 s lease: the lease was renewed before the last event, by up to a
    # renewal interval). silent_s is rounded to 0.1 s.
    quiet_until_expiry = (lease_expires_at - timestamp(before[-1])).total_seconds()
    assert stalled["data"]["silent_s"] >= round(quiet_until_expiry, 1) - 0.05
    assert events[len(before) + 1]["data"]["gap_s"] == stalled["data"]["silent_s"]


async def test_a_run_abandoned_as_often_as_attempts_allow_ends_failed(pool: Pool) -> None:
    generation_id = await create_generation(pool)
    first = await started_and_abandoned(pool, generation_id, "crashed-1")
    second = await claim_by_hand(pool, "crashed-2", 0.1)
    assert (first.attempt, second.attempt) == (1, 2)
    await wait_lease_expired(pool, generation_id)
    before = await events_of(pool, generation_id)

    async with running_worker(pool, offline(0.0), attempts_max=2):
        await wait_finished(pool, [generation_id], seconds=10)

    events = await events_of(pool, generation_id)
    assert events[: len(before)] == before
    assert types(events)[len(before) :] == [EventType.FAILED], "the run was started again"
    failed = events[-1]
    assert "gave up after 2 attempts" in failed["data"]["error"]
    assert "gave up after 2 attempts" in failed["message"]
    row = await generation(pool, generation_id)
    assert row.status is Status.FAILED
    assert row.error == failed["data"]["error"]
    assert row.finished_at is not None


async def test_a_run_abandoned_fewer_times_than_the_limit_is_resumed(pool: Pool) -> None:
    generation_id = await create_generation(pool)
    await started_and_abandoned(pool, generation_id, "crashed-1")
    before = await events_of(pool, generation_id)

    async with running_worker(pool, offline(0.0), attempts_max=2) as worker:
        await wait_finished(pool, [generation_id], seconds=10)

    events = await events_of(pool, generation_id)
    assert_resumed_run_is_complete(events, before, worker)
    assert await stored_files(pool, generation_id) == planned_files()


@pytest.mark.parametrize("started", [False, True], ids=["claimed-only", "started"])
async def test_a_cancel_requested_while_nobody_held_the_run_ends_it_at_the_next_claim(
    pool: Pool, started: bool
) -> None:
    generation_id = await create_generation(pool)
    abandoned = await claim_by_hand(pool, "crashed", 0.2)
    if started:
        await LogEmitter(pool, abandoned, retry_s=1.0).emit(
            NewEvent(EventType.STARTED, "starting", 0.01, "Started")
        )
    before = await events_of(pool, generation_id)

    status = await runs.cancel_generation(pool, "alice", generation_id)
    assert status is (Status.RUNNING if started else Status.QUEUED)
    assert await events_of(pool, generation_id) == before  # only flagged, nothing appended
    await wait_lease_expired(pool, generation_id)

    async with running_worker(pool, offline(0.0)):
        await wait_finished(pool, [generation_id], seconds=10)

    events = await events_of(pool, generation_id)
    assert events[: len(before)] == before
    assert types(events)[len(before) :] == [EventType.CANCELLED]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert (await generation(pool, generation_id)).status is Status.CANCELLED


async def test_a_cancel_notify_stops_a_run_between_appends_within_a_second(
    pool: Pool, database_url: str
) -> None:
    # Text is never flushed mid-phase, so the run appends nothing until the phase's answer is
    # complete (seconds away): only the NOTIFY can stop it sooner.
    slow = offline(0.05, delta_flush_s=60.0, delta_flush_bytes=10**9)
    worker = Worker(pool, slow, concurrency=2, poll_s=30.0)
    async with listening(database_url, {generations.CANCEL_CHANNEL: worker.request_cancel}):
        worker.start()
        try:
            generation_id = await create_generation(pool)
            worker.wake()
            await wait_for_event(pool, generation_id, EventType.PHASE_STARTED)
            before = await events_of(pool, generation_id)
            assert await runs.cancel_generation(pool, "alice", generation_id) is Status.RUNNING
            await wait_finished(pool, [generation_id], seconds=1.0)
        finally:
            await worker.stop()

    events = await events_of(pool, generation_id)
    assert types(before) == [EventType.QUEUED, EventType.STARTED, EventType.PHASE_STARTED]
    assert_well_formed(events, EventType.CANCELLED)
    assert types(events) == [*types(before), EventType.CANCELLED]
    assert EventType.FILE_SAVED not in types(events)
    assert (events[-1]["stage"], events[-1]["progress"]) == ("core", before[-1]["progress"])
    assert await stored_files(pool, generation_id) == {}
    assert (await generation(pool, generation_id)).status is Status.CANCELLED


async def test_a_cancel_notify_for_a_run_this_worker_does_not_hold_changes_nothing(
    pool: Pool,
) -> None:
    gate = asyncio.Event()
    fast = offline(0.0)

    async def gated(job: Job, emitter: Emitter) -> None:
        await gate.wait()
        await fast(job, emitter)

    async with running_worker(pool, gated) as worker:
        generation_id = await create_generation(pool)
        worker.wake()
        await wait_for_event(pool, generation_id, EventType.STARTED)
        worker.request_cancel("not-a-uuid")
        worker.request_cancel(str(await create_generation(pool)))  # queued, held by nobody here
        worker.request_cancel(f"{generation_id}:7")
        gate.set()
        await wait_finished(pool, [generation_id], seconds=10)

    assert_well_formed(await events_of(pool, generation_id), EventType.SUCCEEDED)


async def test_a_worker_renewing_its_lease_keeps_its_run_from_an_idle_worker(
    pool: Pool,
) -> None:
    lease_s = 0.5
    async with running_worker(pool, offline(0.005), lease_s=lease_s) as holder:
        generation_id = await create_generation(pool)
        holder.wake()
        await wait_for_event(pool, generation_id, EventType.STARTED)
        async with running_worker(pool, offline(0.0), lease_s=lease_s, poll_s=0.05) as idle:
            await wait_finished(pool, [generation_id], seconds=15)

    events = await events_of(pool, generation_id)
    assert_well_formed(events, EventType.SUCCEEDED)
    assert EventType.RESUMED not in types(events)
    [started] = [e for e in events if e["type"] == EventType.STARTED]
    assert started["data"]["worker"] == holder.worker_id
    assert started["data"]["worker"] != idle.worker_id
    assert completed_stages(events) == list(STAGES)
    row = await generation(pool, generation_id)
    assert row.started_at is not None
    assert row.finished_at is not None
    ran_s = (row.finished_at - row.started_at).total_seconds()
    assert ran_s > 3 * lease_s, f"the run took {ran_s:.2f}s: too short to need a renewal"


async def test_a_renewal_that_fails_with_an_error_is_tried_again_and_the_run_is_kept(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error other than an outage (a deadlock, a bug) in one renewal must not end the
    renewals: the loop ending would let the lease run out under a live run."""
    lease_s = 0.5
    real_renew = generations.renew_leases
    failed = asyncio.Event()

    async def renew_once_failing(*args: Any) -> set[UUID]:
        if not failed.is_set():
            failed.set()
            raise asyncpg.DeadlockDetectedError("deadlock detected")
        return await real_renew(*args)

    monkeypatch.setattr(generations, "renew_leases", renew_once_failing)
    async with running_worker(pool, offline(0.005), lease_s=lease_s) as holder:
        generation_id = await create_generation(pool)
        holder.wake()
        await wait_for_event(pool, generation_id, EventType.STARTED)
        async with running_worker(pool, offline(0.0), lease_s=lease_s, poll_s=0.05):
            await wait_finished(pool, [generation_id], seconds=15)

    assert failed.is_set()
    events = await events_of(pool, generation_id)
    assert_well_formed(events, EventType.SUCCEEDED)
    assert EventType.RESUMED not in types(events), "the holder kept its lease after the error"
    row = await generation(pool, generation_id)
    assert row.started_at is not None
    assert row.finished_at is not None
    assert (row.finished_at - row.started_at).total_seconds() > 3 * lease_s


async def test_a_cancel_notify_during_an_append_ends_where_the_log_stands(
    pool: Pool, database_url: str
) -> None:
    """The cancel's NOTIFY often lands while an append is in flight (the cancel's row lock
    holds the append back until the cancel commits). That append may well be committed: the
    terminal event must then carry its stage and progress, not the ones before it."""
    worker = Worker(pool, offline(0.0), concurrency=2, poll_s=30.0)
    ended: list[list[tuple[str, str, float]]] = []
    async with listening(database_url, {generations.CANCEL_CHANNEL: worker.request_cancel}):
        worker.start()
        try:
            for _ in range(5):
                generation_id = await create_generation(pool)
                worker.wake()
                await wait_for_event(pool, generation_id, EventType.PHASE_STARTED)
                await asyncio.sleep(0.05)  # the run appends one llm.delta after another
                assert await runs.cancel_generation(pool, "alice", generation_id) is (
                    Status.RUNNING
                )
                await wait_finished(pool, [generation_id], seconds=20)
                events = await events_of(pool, generation_id)
                assert_well_formed(events, EventType.CANCELLED)
                ended.append([(e["type"], e["stage"], e["progress"]) for e in events[-2:]])
        finally:
            await worker.stop()

    for (_, stage, progress), (kind, end_stage, end_progress) in ended:
        assert kind == EventType.CANCELLED
        assert (end_stage, end_progress) == (stage, progress), ended


class LateCancelNotify:
    """The cancel channel as a slow listener delivers it: each NOTIFY is held back (``hold`` is
    the listener's handler) until the run, writing its terminal event, reaches ``hand_over``;
    only then does the worker hear of it, while the run is suspended there."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._held: asyncio.Queue[str] = asyncio.Queue()
        self.run: asyncio.Task[Any] | None = None
        self.handed_over = asyncio.Event()

    def hold(self, payload: str) -> None:
        self._held.put_nowait(payload)

    async def hand_over(self) -> None:
        payload = await asyncio.wait_for(self._held.get(), 10)
        self.run = asyncio.current_task()
        asyncio.get_running_loop().call_soon(self._worker.request_cancel, payload)
        self.handed_over.set()
        await asyncio.sleep(0)  # the worker handles the NOTIFY while the run waits here


def stop_the_ending_at(
    monkeypatch: pytest.MonkeyPatch, point: str, hook: Callable[[], Awaitable[None]]
) -> None:
    """The runner's ``event_log`` with ``hook`` awaited before the run, ending, calls
    ``point``: ``select_head`` (where it reads the head for its terminal event) or ``append``
    (of a batch that ends with a terminal event)."""

    async def select_head(conn: Any, generation_id: UUID) -> event_log.Head:
        await hook()
        return await event_log.select_head(conn, generation_id)

    async def append(
        conn: Any,
        generation_id: UUID,
        events: Sequence[NewEvent],
        files: Sequence[NewFile] = (),
        **options: Any,
    ) -> event_log.Appended:
        if events[-1].is_terminal:
            await hook()
        return await event_log.append(conn, generation_id, events, files, **options)

    wrapped = SimpleNamespace(**vars(event_log))
    setattr(wrapped, point, {"select_head": select_head, "append": append}[point])
    monkeypatch.setattr(runner, "event_log", wrapped)


@pytest.mark.parametrize("point", ["select_head", "append"])
@pytest.mark.parametrize(
    "ending", [EventType.CANCELLED, EventType.FAILED], ids=["cancelled", "failed"]
)
async def test_a_cancel_notify_heard_while_the_run_ends_does_not_stop_its_terminal_event(
    pool: Pool,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    point: str,
    ending: EventType,
) -> None:
    """A cancel commits while the run works. The run learns of it from its own next append
    (stored, and answering ``cancel_requested``) and starts writing ``generation.cancelled``,
    or it fails first and starts writing ``generation.failed``. The cancel's NOTIFY was sent by
    the same commit, but the listener may hand it to the worker only now (in production the
    append, held back by the cancel's row lock, is answered at the very commit that sends the
    NOTIFY). It must not stop the terminal event: the run would be left running, its task gone,
    until its lease ran out (issue 12, finding 8). Driven: the NOTIFY is held back and handed
    to the worker while the run is suspended just before ``point``, every time."""
    started = asyncio.Event()
    go_on = asyncio.Event()

    async def working(job: Job, emitter: Emitter) -> None:
        await emitter.emit(NewEvent(EventType.PHASE_STARTED, "core", 0.1, "Phase 1 of 4"))
        started.set()
        await go_on.wait()
        if ending is EventType.FAILED:
            raise RuntimeError("the model said no")
        # The cancel is committed: this append is stored, then raises RunCancelled.
        await emitter.emit(NewEvent(EventType.LLM_DELTA, "core", 0.2, "Writing", {"text": "x"}))

    worker = Worker(pool, working, concurrency=2, poll_s=30.0)
    late = LateCancelNotify(worker)
    stop_the_ending_at(monkeypatch, point, late.hand_over)
    async with listening(database_url, {generations.CANCEL_CHANNEL: late.hold}):
        worker.start()
        try:
            generation_id = await create_generation(pool)
            worker.wake()
            await asyncio.wait_for(started.wait(), 10)
            assert await runs.cancel_generation(pool, "alice", generation_id) is Status.RUNNING
            go_on.set()
            await asyncio.wait_for(late.handed_over.wait(), 10)
            assert late.run is not None
            await asyncio.wait({late.run}, timeout=10)
            assert late.run.done(), "the run never ended"
            events = await events_of(pool, generation_id)
        finally:
            await worker.stop()

    assert types(events)[-1] == ending, f"the run ended without its terminal event: {types(events)}"
    assert not late.run.cancelled()
    assert_well_formed(events, ending)
    if ending is EventType.CANCELLED:
        assert types(events)[2:] == [EventType.PHASE_STARTED, EventType.LLM_DELTA, ending]
        assert (events[-1]["stage"], events[-1]["progress"]) == ("core", 0.2)
    else:
        assert types(events)[2:] == [EventType.PHASE_STARTED, ending]
        assert events[-1]["data"]["error"] == "the model said no"
    assert (await generation(pool, generation_id)).status == ending.removeprefix("generation.")


async def test_a_worker_whose_lease_was_taken_over_stops_that_run_and_frees_its_slot(
    pool: Pool,
) -> None:
    # The run appends nothing mid-phase, so fencing cannot stop it soon: only the renewal,
    # finding the lease gone, can.
    slow = offline(0.05, delta_flush_s=60.0, delta_flush_bytes=10**9)
    worker = Worker(pool, slow, concurrency=1, poll_s=0.1, lease_s=0.6)
    worker.start()
    try:
        taken = await create_generation(pool)
        worker.wake()
        await wait_for_event(pool, taken, EventType.PHASE_STARTED)
        async with pool.acquire() as conn, conn.transaction():
            # As if the worker had paused past its lease and another claimed the run.
            await conn.execute(
                "UPDATE generations SET lease_expires_at = clock_timestamp() WHERE id = $1",
                taken,
            )
            thief = await generations.claim_next(conn, "thief", 30.0)
        assert thief is not None
        assert (thief.id, thief.attempt) == (taken, 2)
        at_theft = await events_of(pool, taken)

        waiting = await create_generation(pool)  # runnable only once the worker's one slot is free
        await wait_for_event(pool, waiting, EventType.STARTED, seconds=2.0)
    finally:
        await worker.stop()

    assert await events_of(pool, taken) == at_theft
    claimed_by, _, _ = await lease_of(pool, taken)
    assert claimed_by == "thief"
    assert (await generation(pool, taken)).status is Status.RUNNING


async def test_a_sweep_says_a_silent_workers_run_stalled_once_and_fences_the_worker_off(
    pool: Pool,
) -> None:
    """No worker is free to resume it: the sweep alone tells readers the run stalled."""
    silent = await insert_running_generation(pool, "alice")
    finished = await insert_running_generation(pool, "alice")
    async with pool.acquire() as conn:
        await event_log.append(
            conn, finished, [NewEvent(EventType.SUCCEEDED, "done", 1.0, "Done")], fence=1
        )
        await conn.execute(
            "UPDATE generations SET lease_expires_at = clock_timestamp() - interval '1 second',"
            " claimed_by = 'the test' WHERE id = ANY($1::uuid[])",
            [silent, finished],
        )

    assert await sweep_stalled(pool) == 1
    assert await sweep_stalled(pool) == 0, "a run is said stalled once"

    events = await events_of(pool, silent)
    stalled = events[-1]
    assert stalled["type"] == EventType.STALLED
    assert_documented(stalled)
    assert (stalled["data"]["worker"], stalled["data"]["attempt"]) == ("the test", 1)
    assert stalled["data"]["silent_s"] >= 0
    assert stalled["message"].startswith("Stalled: worker the test fell silent")
    claimed_by, lease_expires_at, _ = await lease_of(pool, silent)
    assert (claimed_by, lease_expires_at) == (None, None), "released for the next worker"
    assert (await events_of(pool, finished))[-1]["type"] == EventType.SUCCEEDED
    # The silent worker wakes up: its claim is fenced off.
    async with pool.acquire() as conn:
        with pytest.raises(LeaseLost):
            await event_log.append(conn, silent, [NewEvent(EventType.LLM_DELTA, "core", 0.1, "x")],
                                   fence=1)  # fmt: skip
    # The next claim resumes it without a second stalled event.
    async with running_worker(pool, offline(0.0), poll_s=0.05):
        await wait_finished(pool, [silent], seconds=10)
    kinds = types(await events_of(pool, silent))
    assert kinds.count(EventType.STALLED) == 1
    assert kinds[kinds.index(EventType.STALLED) + 1] == EventType.RESUMED
