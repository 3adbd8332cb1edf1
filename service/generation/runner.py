"""The worker: claims queued generations and runs them, emitting through the log.

A NOTIFY on the jobs channel wakes it the moment a generation is created; a slow poll is the
fallback, so nothing depends on a notification arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from uuid import UUID, uuid4

from service.errors import GenerationFinished
from service.events import EventType, NewEvent, NewFile
from service.generation.emitter import Generate, Job, RunCancelled
from service.generation.generator import GenerationFailed
from service.generation.phases import STARTED
from service.store import event_log, generations
from service.store.db import Pool, connection

log = logging.getLogger(__name__)

LEASE_S = 60.0


class LogEmitter:
    """Appends a run's events to the log and remembers where the run stands."""

    def __init__(self, pool: Pool, generation_id: UUID) -> None:
        self._pool = pool
        self.generation_id = generation_id
        self.stage = "starting"
        self.progress = 0.0

    async def emit(self, *events: NewEvent, files: Sequence[NewFile] = ()) -> None:
        async with connection(self._pool) as conn:
            appended = await event_log.append(conn, self.generation_id, events, files)
        self.stage, self.progress = events[-1].stage, events[-1].progress
        if appended.cancel_requested and not events[-1].is_terminal:
            raise RunCancelled


class Worker:
    """Runs up to ``concurrency`` generations at once in this process."""

    def __init__(self, pool: Pool, generate: Generate, *, concurrency: int, poll_s: float) -> None:
        self._pool = pool
        self._generate = generate
        self._concurrency = concurrency
        self._poll_s = poll_s
        self._wakeup = asyncio.Event()
        self._runs: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:8]}"

    def wake(self, _payload: str = "") -> None:
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="genstream-worker")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._runs) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                while len(self._runs) < self._concurrency and await self._claim_one():
                    pass
            except Exception:
                log.exception("claiming a generation failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self._poll_s)

    async def _claim_one(self) -> bool:
        async with connection(self._pool) as conn:
            claimed = await generations.claim_next(conn, self.worker_id, LEASE_S)
        if claimed is None:
            return False
        task = asyncio.create_task(
            self._run(claimed),
            name=f"genstream-run-{claimed.id}",
        )
        self._runs.add(task)
        task.add_done_callback(self._finished)
        return True

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        self.wake()  # a slot is free

    async def _run(self, job: Job) -> None:
        generation_id = job.id
        emitter = LogEmitter(self._pool, generation_id)
        try:
            await emitter.emit(
                NewEvent(
                    EventType.STARTED,
                    "starting",
                    STARTED,
                    f"Started with the {job.provider} provider",
                    {"worker": self.worker_id, "provider": job.provider, "model": job.model},
                )
            )
            await self._generate(job, emitter)
            await emitter.emit(NewEvent(EventType.SUCCEEDED, "done", 1.0, "Generation finished"))
        except RunCancelled:
            await emitter.emit(
                NewEvent(EventType.CANCELLED, emitter.stage, emitter.progress, "Cancelled")
            )
        except GenerationFailed as exc:
            await emitter.emit(
                NewEvent(
                    EventType.FAILED,
                    emitter.stage,
                    emitter.progress,
                    f"Failed: {exc}",
                    {"error": str(exc)},
                )
            )
        except GenerationFinished:
            log.info("generation %s was finished elsewhere; stopping", generation_id)
        except Exception as exc:
            log.exception("generation %s failed", generation_id)
            await emitter.emit(
                NewEvent(
                    EventType.FAILED,
                    emitter.stage,
                    emitter.progress,
                    f"Failed: {exc}",
                    {"error": str(exc) or type(exc).__name__},
                )
            )
