"""The worker: claims runs, holds them by a renewed lease, resumes them from their own log.

* A NOTIFY on the jobs channel wakes workers the moment a run is created or released; a slow
  poll is the fallback (it also finds runs whose worker died: their lease ran out).
* Every append carries the claim's attempt (fencing) and per-event idempotency keys, and is
  retried with backoff while PostgreSQL is unreachable: the keys make the retry safe. The runs
  of a process append through its one ``Appender``, which commits what they append at the
  same time together (appender.py).
* On shutdown the worker stops its runs and releases their leases, so another worker resumes
  them at once instead of after the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast
from uuid import UUID, uuid4

from service.errors import GenerationFinished, LeaseLost, StoreUnavailable
from service.events import (
    EventType,
    FailedData,
    NewEvent,
    NewFile,
    ResumedData,
    StalledData,
    StartedData,
    SucceededData,
    Verification,
)
from service.generation.appender import Appender
from service.generation.emitter import Generate, Job, RunCancelled
from service.generation.generator import GenerationFailed
from service.generation.phases import STARTED
from service.observe import logs, metrics, traces
from service.store import event_log, generations
from service.store.db import Pool, connection
from service.store.generations import Claimed

log = logs.get_logger(__name__)


class LogEmitter:
    """Appends one run's events, fenced by its attempt, and remembers where the run stands.
    With an ``appender``, its appends are committed together with other runs' (group commit);
    without, each on a pooled connection of its own."""

    def __init__(
        self,
        pool: Pool,
        job: Claimed,
        *,
        retry_s: float,
        stage: str = "starting",
        appender: Appender | None = None,
    ) -> None:
        self._pool = pool
        self._appender = appender
        self._retry_s = retry_s
        self._batches = 0
        self.generation_id = job.id
        self.attempt = job.attempt
        self.stage = stage
        self.progress = job.progress
        self._created_at = job.created_at

    async def emit(self, *events: NewEvent, files: Sequence[NewFile] = ()) -> None:
        self._batches += 1
        keys = [f"{self.attempt}.{self._batches}.{i}" for i in range(len(events))]
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self._retry_s, 0.05
        while True:
            try:
                if self._appender is not None:
                    appended = await self._appender.append(
                        self.generation_id, events, files, fence=self.attempt, keys=keys
                    )
                else:
                    async with connection(self._pool) as conn:
                        appended = await event_log.append(
                            conn, self.generation_id, events, files, fence=self.attempt, keys=keys
                        )
                break
            except StoreUnavailable as exc:
                # The COMMIT may or may not have happened: the same keys make a retry safe.
                if loop.time() >= deadline:
                    raise
                metrics.APPEND_RETRIES.labels("unavailable").inc()
                log.warning("append.retry", error=str(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
        self.stage, self.progress = events[-1].stage, events[-1].progress
        for event in events:
            if event.type is EventType.PHASE_COMPLETED or event.is_terminal:
                self._observe(event)
        if appended.cancel_requested and not events[-1].is_terminal:
            raise RunCancelled

    def _observe(self, event: NewEvent) -> None:
        """A phase's or the run's end, in the metrics and the log (once: it is committed)."""
        data = event.data
        if event.type is EventType.PHASE_COMPLETED:
            seconds = float(data.get("duration_ms", 0)) / 1000
            metrics.PHASE_SECONDS.labels(str(data.get("phase"))).observe(seconds)
            log.info(
                "phase.completed",
                phase=data.get("phase"),
                duration_s=seconds,
                files=data.get("files"),
                attempts=data.get("attempts"),
                prompt_tokens=data.get("prompt_tokens"),
                output_tokens=data.get("output_tokens"),
            )
            return
        outcome = event.status.value
        seconds = max(0.0, time.time() - self._created_at) if self._created_at else 0.0
        metrics.RUNS_FINISHED.labels(outcome).inc()
        metrics.RUN_SECONDS.labels(outcome).observe(seconds)
        log.info(
            "run.finished",
            outcome=outcome,
            duration_s=round(seconds, 3),
            **({"error": data["error"]} if "error" in data else {}),
        )


def stalled_event(
    stage: str, progress: float, worker: str, attempt: int, silent_s: float | None
) -> NewEvent:
    silent = round(silent_s or 0.0, 1)
    return NewEvent(
        EventType.STALLED,
        stage,
        progress,
        f"Stalled: worker {worker} fell silent ({silent:g} s without an event); another "
        "worker takes the run over",
        StalledData(worker=worker, attempt=attempt, silent_s=silent),
    )


async def sweep_stalled(pool: Pool) -> int:
    """Release the runs whose worker's lease ran out, each with ``generation.stalled`` in its
    log, in one transaction: readers learn of a dead or hung worker within a lease and a
    renewal interval, even when no worker is free to resume the run. Returns how many."""
    async with connection(pool) as conn, conn.transaction():
        swept = await generations.sweep_stalled(conn)
        for run in swept:
            event = stalled_event(
                run.stage, run.progress, run.stale_owner, run.stale_attempt, run.silent_s
            )
            await event_log.append(conn, run.id, [event], fence=run.attempt)
            log.warning(
                "run.stalled",
                generation_id=str(run.id),
                worker=run.stale_owner,
                attempt=run.stale_attempt,
                silent_s=event.data["silent_s"],
            )
    return len(swept)


@dataclass(slots=True)
class _Run:
    task: asyncio.Task[None]
    claimed: Claimed
    cancel_requested: bool = False  # a cancel NOTIFY stopped the task
    ending: bool = False  # the run is writing its terminal event: a NOTIFY must not stop that


class Worker:
    """Runs up to ``concurrency`` generations at once in this process."""

    def __init__(
        self,
        pool: Pool,
        generate: Generate,
        *,
        concurrency: int,
        poll_s: float,
        lease_s: float = 30.0,
        attempts_max: int = 5,
        appender: Appender | None = None,
    ) -> None:
        self._pool = pool
        self._appender = appender
        self._generate = generate
        self._concurrency = concurrency
        self._poll_s = poll_s
        self._lease_s = lease_s
        self._attempts_max = attempts_max
        self._wakeup = asyncio.Event()
        self._runs: dict[UUID, _Run] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"

    def wake(self, _payload: str = "") -> None:
        self._wakeup.set()

    def request_cancel(self, payload: str) -> None:
        """A cancel NOTIFY: if this process runs that generation, stop it now.

        Not if the run is already ending: it may have learnt of the same cancel first from its
        own append (the NOTIFY is sent by the same commit, and the listener may hand it over
        later), or failed, and be writing its terminal event. Cancelling the task then left
        the run without one until its lease ran out and a later claim ended it.
        """
        with contextlib.suppress(ValueError):
            run = self._runs.get(UUID(payload))
            if run is not None and not (run.cancel_requested or run.ending):
                run.cancel_requested = True
                run.task.cancel()

    def start(self) -> None:
        metrics.RUNS_ACTIVE.read_from(self, lambda: [((), len(self._runs))])
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="genstream-worker"),
            asyncio.create_task(self._renew_loop(), name="genstream-leases"),
        ]

    async def stop(self) -> None:
        """Stop claiming, stop the runs, and release their leases for another worker."""
        metrics.RUNS_ACTIVE.forget(self)
        for task in self._tasks:
            task.cancel()
        running = dict(self._runs)
        for run in running.values():
            run.task.cancel()
        for task in [*self._tasks, *(run.task for run in running.values())]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if running:
            try:
                async with connection(self._pool) as conn:
                    await generations.release_leases(conn, self.worker_id, list(running))
                log.info("worker.released", runs=len(running), worker=self.worker_id)
            except StoreUnavailable:
                log.warning("worker.release_failed", runs=len(running), worker=self.worker_id)

    async def _claim_loop(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                while len(self._runs) < self._concurrency and await self._claim_one():
                    pass
            except StoreUnavailable as exc:
                log.warning("worker.claim_failed", error=str(exc))
            except Exception:
                log.exception("worker.claim_error")
            # Not asyncio.wait_for: on Python 3.11 it drops a cancel that lands as the wake-up
            # arrives (CPython gh-86296), and stop() then waits for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wakeup.wait()

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            # Any error is logged and tried again next time: this loop ending would let every
            # lease of the process run out while its runs go on.
            try:
                await sweep_stalled(self._pool)
            except StoreUnavailable as exc:
                log.warning("worker.sweep_failed", error=str(exc))
            except Exception:
                log.exception("worker.sweep_error")
            if not self._runs:
                continue
            try:
                async with connection(self._pool) as conn:
                    held = await generations.renew_leases(
                        conn, self.worker_id, self._lease_s, list(self._runs)
                    )
            except StoreUnavailable as exc:
                metrics.LEASE_RENEWAL_FAILURES.inc()
                log.warning("lease.renewal_failed", error=str(exc), runs=len(self._runs))
                continue
            except Exception:
                metrics.LEASE_RENEWAL_FAILURES.inc()
                log.exception("lease.renewal_error", runs=len(self._runs))
                continue
            for generation_id, run in list(self._runs.items()):
                if generation_id not in held:
                    metrics.LEASES_LOST.inc()
                    log.warning(
                        "lease.lost",
                        generation_id=str(generation_id),
                        attempt=run.claimed.attempt,
                        owner=run.claimed.owner,
                    )
                    run.task.cancel()

    async def _claim_one(self) -> bool:
        async with connection(self._pool) as conn:
            claimed = await generations.claim_next(conn, self.worker_id, self._lease_s)
        if claimed is None:
            return False
        task = asyncio.create_task(self._run(claimed), name=f"genstream-run-{claimed.id}")
        self._runs[claimed.id] = _Run(task, claimed)
        task.add_done_callback(lambda _: self._finished(claimed.id))
        return True

    def _finished(self, generation_id: UUID) -> None:
        self._runs.pop(generation_id, None)
        self.wake()  # a slot is free

    async def _run(self, claimed: Claimed) -> None:
        logs.bind_run(claimed.id, claimed.attempt, claimed.owner)  # this task's lines only
        metrics.CLAIMS.inc()
        with traces.continuing(
            "run",
            claimed.trace_context,
            generation_id=str(claimed.id),
            attempt=claimed.attempt,
            provider=claimed.provider,
        ):
            await self._run_claimed(claimed)

    async def _run_claimed(self, claimed: Claimed) -> None:
        emitter = LogEmitter(
            self._pool,
            claimed,
            retry_s=self._lease_s,
            stage=claimed.stage,
            appender=self._appender,
        )
        try:
            await self._execute(claimed, emitter)
        except RunCancelled:
            await self._finish(emitter, EventType.CANCELLED, "Cancelled")
        except asyncio.CancelledError:
            run = self._runs.get(claimed.id)
            if run is None or not run.cancel_requested:
                log.info("run.stopped", reason="shutdown or lease lost: left for the next claim")
                raise  # shutdown or lease lost: the run stays for another worker
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await self._finish(emitter, EventType.CANCELLED, "Cancelled")
        except (GenerationFinished, LeaseLost) as exc:
            log.info("run.stopped", reason=str(exc))
        except StoreUnavailable as exc:
            log.warning("run.stopped", reason=f"PostgreSQL unreachable: {exc}")
        except GenerationFailed as exc:
            await self._finish(
                emitter,
                EventType.FAILED,
                f"Failed: {exc}",
                error=str(exc),
                verification=exc.verification,
            )
        except Exception as exc:
            log.exception("run.crashed")
            error = str(exc) or type(exc).__name__
            await self._finish(emitter, EventType.FAILED, f"Failed: {error}", error=error)

    async def _execute(self, claimed: Claimed, emitter: LogEmitter) -> None:
        if claimed.cancel_requested:
            raise RunCancelled
        async with connection(self._pool) as conn:
            state = await event_log.select_run_state(conn, claimed.id)
        if claimed.attempt - state.attempt_base > self._attempts_max:
            reason = (
                f"gave up after {self._attempts_max} attempts: the workers running it kept "
                "stopping (crashed, killed or lost their lease)"
            )
            raise GenerationFailed(reason)
        if state.started:
            done = len(state.completed_stages)
            metrics.RESUMES.inc()
            log.info("run.resumed", worker=self.worker_id, completed_phases=done)
            resumed = ResumedData(
                worker=self.worker_id,
                attempt=claimed.attempt,
                completed_phases=list(state.completed_stages),
            )
            events = []
            if claimed.silent_s is not None:
                resumed["gap_s"] = round(claimed.silent_s, 1)
            if claimed.stale_owner is not None and claimed.stale_attempt is not None:
                # Taken straight off a worker whose lease ran out: say so first.
                events.append(
                    stalled_event(
                        claimed.stage,
                        claimed.progress,
                        claimed.stale_owner,
                        claimed.stale_attempt,
                        claimed.silent_s,
                    )
                )
            events.append(
                NewEvent(
                    EventType.RESUMED,
                    claimed.stage,
                    claimed.progress,
                    f"Resumed by another worker (attempt {claimed.attempt}) after {done} of "
                    "the phases",
                    resumed,
                )
            )
            await emitter.emit(*events)
        else:
            if claimed.attempt == 1 and claimed.created_at:
                metrics.QUEUE_WAIT.observe(max(0.0, time.time() - claimed.created_at))
            log.info("run.claimed", worker=self.worker_id, provider=claimed.provider)
            await emitter.emit(
                NewEvent(
                    EventType.STARTED,
                    "starting",
                    max(STARTED, claimed.progress),
                    f"Started with the {claimed.provider} provider",
                    StartedData(
                        worker=self.worker_id,
                        attempt=claimed.attempt,
                        provider=claimed.provider,
                        model=claimed.model,
                    ),
                )
            )
        job = Job(
            id=claimed.id,
            spec=claimed.spec,
            provider=claimed.provider,
            model=claimed.model,
            attempt=claimed.attempt,
            completed_stages=state.completed_stages,
            files=state.files,
            progress=emitter.progress,
            verify=claimed.verify,
            verification=cast("Verification | None", state.verification),
        )
        verification = await self._generate(job, emitter)
        message, data = "Generation finished", SucceededData()
        if verification is not None:
            data["verification"] = verification
            if verification["level"] != "off":
                message = f"Generation finished and verified: {verification['summary']}"
        await emitter.emit(NewEvent(EventType.SUCCEEDED, "done", 1.0, message, data))

    async def _finish(
        self,
        emitter: LogEmitter,
        kind: EventType,
        message: str,
        *,
        error: str | None = None,
        verification: Verification | None = None,
    ) -> None:
        """The terminal event; if even that cannot be written, the run is left to the lease.

        Its stage and progress are read back from the row: an append interrupted by a cancel
        may have committed without the emitter hearing of it, and the bar must not move back.

        The run is marked ending before the first await, so a cancel NOTIFY handled from here on
        leaves it alone (see ``request_cancel``); shutdown and a lost lease still stop it, and
        the run stays for its next claim.
        """
        run = self._runs.get(emitter.generation_id)
        if run is not None:
            run.ending = True
        data = FailedData(error=error) if error is not None else FailedData()
        if verification is not None:
            data["verification"] = verification
        try:
            async with connection(self._pool) as conn:
                head = await event_log.select_head(conn, emitter.generation_id)
            await emitter.emit(NewEvent(kind, head.stage, head.progress, message, data))
        except (GenerationFinished, LeaseLost, StoreUnavailable) as exc:
            log.warning("run.end_failed", error=str(exc))
