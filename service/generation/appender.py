"""Group commit: the appends of a process's runs, sent together as one statement and one commit.

Why: a transaction that NOTIFYs holds PostgreSQL's database-wide notify lock from just before
its commit to the end of it, WAL flush included, so appends that each commit on their own are
serialised one flush apiece and never share one; and each pays its own round trip. Measured
(bench case 1, single-event appends): 16 writers committing each append alone reached 1.3x
what one writer does; grouped, 4.3x what they reached alone.

How: one sender task. A writer's append waits in a list; whenever no group is in flight, the
sender takes everything waiting and sends it as ONE ``event_log.append_many`` on one
connection: every append's events durable, and NOTIFYed, by the same commit. Nothing waits on
a timer: an append that finds the sender idle goes at once, alone (``append`` itself, the
statement a lone writer always used), and appends gather only behind a group in flight, so
groups grow with the load and a lone writer pays one hop between tasks and nothing more.

What each writer gets is what ``event_log.append`` would have told it alone:

* A refused append (lease lost, run finished, run gone) raises its own error; the others land.
* A run's second append waits for the next group (a statement takes each run once), so one
  run's appends commit in the order they were made.
* If the group's statement fails (an append retried after a lost commit finds its idempotency
  keys stored, a deadlock, a bad value), nothing of it was stored: each append is sent again
  alone, where ``append`` recognises a stored batch by its keys and an error stays with the
  append that caused it.
* A run's row held elsewhere (an operator's open transaction, a repair) is waited for
  ``event_log.BRIEF_LOCK_TIMEOUT`` at most, then that statement's appends go on *aside*: each
  alone, in a task of its own, waiting as a lone append always did (up to the statement
  timeout; then ``LogEmitter`` retries it), while the groups go on without
  them (a run with an append aside has its next one wait). One held row costs the other runs
  of the process a second, not every run the 60 s of a statement timeout.
* If the connection is lost, every writer of the group gets ``StoreUnavailable`` (the commit
  may or may not have happened, for all of them at once) and retries with the same keys, as
  ``LogEmitter`` always did.
* A writer cancelled before its append was sent takes it back; one cancelled after waits for
  its group to end (the others are not disturbed), so that when the cancel reaches the run,
  its append is either stored or not, never still on the way: the run's next read of its own
  head sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from uuid import UUID

import asyncpg

from service.errors import StoreUnavailable
from service.events import NewEvent, NewFile
from service.observe import logs, metrics, traces
from service.store import event_log
from service.store.db import HeldConnection, Pool, connection
from service.store.event_log import Appended, AppendParameters

log = logs.get_logger(__name__)

# A group's bounds. The statement reads each event from the arrays by its place, a walk that
# grows with the group's events (store/event_log.py): past a few hundred, a group is better
# cut in two, each still one commit. The first append waiting always goes, however large.
GROUP_APPENDS_MAX: Final = 256
GROUP_EVENTS_MAX: Final = 512

# The groups' connection goes back to the pool once no append came for this long (and at
# once whenever another task waits for the pool: ``db.HeldConnection``).
IDLE_RELEASE_S: Final = 1.0


@dataclass(slots=True, eq=False)
class _Waiting:
    parameters: AppendParameters
    done: asyncio.Future[Appended]
    sent: bool = False


class Appender:
    """One per process (``runtime.py``); ``start`` before the first append, ``stop`` after
    the last writer has stopped. From its first append to ``stop`` it keeps one of the pool's
    connections for its groups (``db.HeldConnection``); appends set aside take others."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._held = HeldConnection(pool)  # the groups' connection, kept between them
        self._waiting: list[_Waiting] = []  # in the order the appends were made
        self._in_flight: list[_Waiting] = []
        # Runs with an append sent alone, in a task of its own (``_set_aside``).
        self._aside: dict[UUID, tuple[asyncio.Task[None], _Waiting]] = {}
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._send_loop(), name="genstream-appender")

    async def stop(self) -> None:
        """Stop sending; a writer still waiting is cancelled as the process's end would."""
        aside = [waiting for _, waiting in self._aside.values()]
        tasks = [task for task in (self._task, *(t for t, _ in self._aside.values())) if task]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        for waiting in [*self._in_flight, *self._waiting, *aside]:
            waiting.done.cancel()  # an aside task cancelled before it ran settles nothing
        self._in_flight, self._waiting, self._aside = [], [], {}
        await self._held.release()

    async def append(
        self,
        generation_id: UUID,
        events: Sequence[NewEvent],
        files: Sequence[NewFile] = (),
        *,
        fence: int | None = None,
        keys: Sequence[str] | None = None,
    ) -> Appended:
        """``event_log.append``, committed together with whatever else is waiting; raises
        what it raises (a malformed batch at once, in the writer's own task)."""
        if self._task is None:
            raise RuntimeError("the appender is not running: start() it first")
        parameters = event_log.prepare(generation_id, events, files, fence=fence, keys=keys)
        waiting = _Waiting(parameters, asyncio.get_running_loop().create_future())
        self._waiting.append(waiting)
        self._arrived.set()
        with traces.span("append", generation_id=generation_id, events=len(events)):
            try:
                return await asyncio.shield(waiting.done)
            except asyncio.CancelledError:
                if not waiting.sent:
                    waiting.done.cancel()  # taken back: the sender skips it
                    raise
                await asyncio.wait([waiting.done])
                if not waiting.done.cancelled():
                    waiting.done.exception()  # retrieved: the writer is gone, not its error
                raise

    async def _send_loop(self) -> None:
        while True:
            if self._held.held and not self._arrived.is_set():
                try:
                    async with asyncio.timeout(IDLE_RELEASE_S):
                        await self._arrived.wait()
                except TimeoutError:
                    await self._held.release()
                    continue
            await self._arrived.wait()
            self._arrived.clear()
            while group := self._take():
                self._in_flight = group
                try:
                    await self._send(group)
                except Exception:  # a bug here must not stop every run's appends
                    log.exception("append.group_crashed", appends=len(group))
                    for waiting in group:
                        _settle(waiting, StoreUnavailable("the appender failed; see its log"))
                self._in_flight = []

    def _take(self) -> list[_Waiting]:
        """Every append waiting, in order, but each run's first only, within the bounds."""
        group: list[_Waiting] = []
        later: list[_Waiting] = []
        runs: set[UUID] = set()
        events = 0
        for waiting in self._waiting:
            if waiting.done.done():
                continue  # its writer took it back
            parameters = waiting.parameters
            run = parameters.generation_id
            size = len(parameters.event_types)
            if (
                run in runs
                or run in self._aside
                or (group and (len(group) >= GROUP_APPENDS_MAX or events + size > GROUP_EVENTS_MAX))
            ):
                later.append(waiting)
                runs.add(run)  # its run's later appends wait behind it: one run, in order
                continue
            waiting.sent = True
            group.append(waiting)
            runs.add(parameters.generation_id)
            events += size
        self._waiting = later
        return group

    async def _send(self, group: list[_Waiting]) -> None:
        metrics.APPEND_GROUP_SIZE.observe(len(group))
        try:
            async with self._held.use() as conn:
                if len(group) == 1:  # the statement a lone writer always had
                    outcomes: list[Appended | Exception] = [
                        await event_log.append_prepared(
                            conn, group[0].parameters, briefly=True, traced=False
                        )
                    ]
                else:
                    outcomes = [*await event_log.append_many(conn, [w.parameters for w in group])]
        except StoreUnavailable as exc:
            for waiting in group:
                _settle(waiting, StoreUnavailable(str(exc)))
            return
        except asyncpg.LockNotAvailableError:
            log.warning("append.row_held", appends=len(group))
            self._set_aside(group)
            return
        except Exception as exc:
            if len(group) == 1:
                _settle(group[0], exc)
                return
            if not _is_replay(exc):
                log.warning("append.group_failed", appends=len(group), error=str(exc))
            self._set_aside(group)
            return
        for waiting, outcome in zip(group, outcomes, strict=True):
            _settle(waiting, outcome)

    def _set_aside(self, group: list[_Waiting]) -> None:
        """Each append of ``group`` alone, in a task of its own: the next groups need not
        wait for them (``_take`` holds their runs' next appends back until they are done)."""
        for waiting in group:
            run = waiting.parameters.generation_id
            task = asyncio.create_task(self._send_alone(waiting), name=f"genstream-append-{run}")
            self._aside[run] = (task, waiting)

    async def _send_alone(self, waiting: _Waiting) -> None:
        try:
            async with connection(self._pool) as conn:
                appended = await event_log.append_prepared(conn, waiting.parameters, traced=False)
        except asyncio.CancelledError:
            waiting.done.cancel()  # stop(): its writer is told as the waiting ones are
            raise
        except Exception as exc:
            _settle(waiting, exc)
        else:
            _settle(waiting, appended)
        finally:
            self._aside.pop(waiting.parameters.generation_id, None)
            self._arrived.set()  # its run's next append may go now


def _settle(waiting: _Waiting, outcome: Appended | Exception) -> None:
    if waiting.done.done():
        return
    if isinstance(outcome, Exception):
        waiting.done.set_exception(outcome)
    else:
        waiting.done.set_result(outcome)


def _is_replay(exc: Exception) -> bool:
    """A stored idempotency key: an append retried after a lost commit (not worth a warning)."""
    return isinstance(exc, asyncpg.UniqueViolationError) and (exc.constraint_name or "").endswith(
        event_log.IDEMPOTENCY_INDEX_SUFFIX
    )
