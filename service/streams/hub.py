"""The in-process hub: who follows which generation here, and the reads they share.

A notification is only a wake-up: whoever is woken re-reads the log after the last seq it
has, so nothing depends on a notification arriving. Wake-ups are level-triggered flags (an
``asyncio.Event`` per subscriber), not queues: a slow stream never makes the hub wait or
buffer, it just finds its flag set and reads everything it missed in one page.

What a wake-up costs is one query per generation, not one per follower: a generation's followers
share a ``LiveEdge``, which keeps its few newest events and reads the log at most once at a time
for all of them. A notification starts that read at once, and the followers are
woken when its events are in hand, so each wakes once per append and finds them waiting: a
thousand browsers watching one generation are one keyset read per append. A follower behind the
live edge (resuming from long ago) reads its own pages until it catches up; one ahead of it (the
edge moved on while nobody read) moves the edge. And because a wake-up can be lost while the
LISTEN connection is down or being replaced, ``check`` compares every followed generation's last
seq with what its edge has seen, one query for all of them, and wakes the ones that fell behind.

With a hot standby (``GENSTREAM_REPLICA_URL``), a follower's own pages are read through
``store/reads.py``: up to a seq the primary is known to have (the edge's base, or the run's
``last_seq`` as its stream opened), which the standby must reach or the primary answers. The
edge itself is read on the primary, whose NOTIFY announced what it reads: a standby has not
replayed that yet.

A multiplexed stream (every run of one owner, ``multiplex.py``) watches its owner instead of a
generation: a notification names a run, so the hub learns each run's owner once (one query per
batch of runs it has not seen) and wakes that owner's watches. Nobody watching: no lookups.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import logging
import time
from collections import OrderedDict
from typing import Final, TypeAlias
from uuid import UUID

from service.errors import StoreUnavailable
from service.observe import metrics
from service.store import event_log, owner_feed
from service.store.db import Pool, connection
from service.store.event_log import StoredEvent
from service.store.reads import Reads

log = logging.getLogger(__name__)

CACHE_MAX_EVENTS: Final = 1_000
OWNERS_CACHED: Final = 100_000  # runs whose owner a multiplexed stream's wake-ups remember
CHECK_CHUNK: Final = 1_000
TIMER_SLACK_S: Final = 0.005
HEARD_SLOTS: Final = 4_096  # see ``Hub.quiet_mark``: a collision costs one read, no more

QuietMark: TypeAlias = tuple[int, int]


class Subscription:
    """One stream's interest in one generation; ``position`` is the last seq it was given.

    ``wait`` times out without a timer per call: a stream that sends an event every
    millisecond would otherwise arm and cancel a timer every millisecond (with thousands of
    streams, an eighth of the process's CPU went to asyncio's timer heap). One timer per
    subscription instead, armed for the newest deadline; when it fires early (there was a
    wait since), it re-arms itself for the rest.
    """

    __slots__ = (
        "_due",
        "_set",
        "_timed_out",
        "_timer",
        "_waiter",
        "catch_up_to",
        "closed",
        "edge",
        "position",
        "waiting",
    )

    def __init__(self, edge: LiveEdge, position: int, catch_up_to: int = 0) -> None:
        self.edge = edge
        self.position = position
        self.catch_up_to = catch_up_to  # the primary's last seq when the stream opened
        self.closed = False
        # A flag and, while ``wait`` waits, a future: an asyncio.Event keeps a deque of its
        # own (~0.4 KiB of every idle stream) for the one waiter a subscription ever has.
        self._set = False
        self._waiter: asyncio.Future[None] | None = None
        self._due = 0.0
        self._timed_out = False
        self._timer: asyncio.TimerHandle | None = None
        self.waiting = False  # inside ``wait``: idle, with nothing left to send

    @property
    def generation_id(self) -> UUID:
        return self.edge.generation_id

    def wake(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False
        self._timed_out = False

    async def wait(self, seconds: float) -> bool:
        """Wait for a wake-up; False when ``seconds`` passed without one (up to
        ``TIMER_SLACK_S`` early; or at once, when the deadline passed outside any wait)."""
        loop = asyncio.get_running_loop()
        self._due = loop.time() + seconds
        if not self._set:
            timer = self._timer
            if timer is None or timer.when() > self._due:
                if timer is not None:
                    timer.cancel()
                self._timer = loop.call_at(self._due, self._on_timer, loop)
            self.waiting = True
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
                self.waiting = False
        if self._timed_out:
            self._timed_out = False
            return False
        return True

    def _on_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        # uvloop's timers keep milliseconds and may fire a little early: without the slack,
        # a timer re-armed for "the rest" fires again at once, over and over (measured: a
        # fifth of the CPU with 10,000 streams).
        if loop.time() < self._due - TIMER_SLACK_S:
            self._timer = loop.call_at(self._due, self._on_timer, loop)
            return
        self._timer = None
        self._timed_out = True
        self.wake()

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class OwnerWatch:
    """One multiplexed stream's wake-ups: an append to any run of its owner sets the flag.
    A few per owner (a dashboard, a CLI), so a plain timeout per wait is cheap enough."""

    __slots__ = ("_flag", "_notified", "closed", "owner")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.closed = False
        self._flag = asyncio.Event()
        self._notified: dict[UUID, int] = {}  # run -> the newest seq announced for it

    def wake(self, generation_id: UUID | None = None, seq: int | None = None) -> None:
        if generation_id is not None and seq is not None:
            self._notified[generation_id] = max(seq, self._notified.get(generation_id, 0))
        self._flag.set()

    def forget_all(self) -> None:
        """The announcements waited for long enough: the keepalive's read takes over."""
        self._notified.clear()

    def pending(self, sent: dict[UUID, int]) -> bool:
        """Whether an announced event has not been sent yet (it is not readable yet: an
        older transaction is still open). Forgets the announcements that were sent."""
        for run, seq in list(self._notified.items()):
            if sent.get(run, 0) >= seq:
                del self._notified[run]
        return bool(self._notified)

    def clear(self) -> None:
        self._flag.clear()

    async def wait(self, seconds: float) -> bool:
        """False when ``seconds`` passed without a wake-up."""
        try:
            async with asyncio.timeout(seconds):
                await self._flag.wait()
        except TimeoutError:
            return False
        return True


class _Read:
    """One shared read in flight: followers wait for ``done``; ``error`` is how it failed."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = asyncio.Event()
        self.error: BaseException | None = None


class LiveEdge:
    """One generation's followers in this process and the newest events they share.

    ``events`` holds the consecutive seqs ``base + 1 .. tail`` as read from the log. A read
    that started after wake-up number ``version`` has seen every event whose notification
    arrived before it (NOTIFY is delivered after commit); ``fresh_version`` is the wake-up
    count when the newest complete read (one that reached the end of the log) started.
    """

    __slots__ = (
        "_reading",
        "base",
        "events",
        "fresh_version",
        "generation_id",
        "heard",
        "notified_seq",
        "subscribers",
        "version",
    )

    def __init__(self, generation_id: UUID) -> None:
        self.generation_id = generation_id
        self.subscribers: set[Subscription] = set()
        self.version = 0
        self.fresh_version = -1
        self.notified_seq = 0
        self.base: int | None = None
        self.events: list[StoredEvent] = []
        # (seq, time.time()) of each notification as it arrived, newest last, kept as long as
        # the events they announce (``_trim``): when each committed event was heard of.
        self.heard: list[tuple[int, float]] = []
        self._reading: _Read | None = None

    @property
    def tail(self) -> int | None:
        return None if self.base is None else self.base + len(self.events)

    def wake(self) -> None:
        for subscription in self.subscribers:
            subscription.wake()

    def seen_seq(self) -> int:
        """The newest seq this process knows exists: read, or announced by a notification
        (whose read may not have happened yet). The check wakes edges behind the log."""
        return max(self.notified_seq, self.tail or 0)


class Hub:
    """Live edges keyed by generation id; costs nothing for generations nobody follows."""

    def __init__(
        self,
        pool: Pool,
        *,
        reads: Reads | None = None,
        page_size: int = 500,
        cache_max: int = CACHE_MAX_EVENTS,
    ) -> None:
        self._pool = pool
        # Catch-up pages (a follower behind the edge) may come from a standby; the edge itself
        # is read on the primary, whose NOTIFY announced what it reads.
        self._reads = reads or Reads(pool, wait_s=0)
        self._page_size = page_size
        self._cache_max = max(cache_max, page_size)
        self._edges: dict[UUID, LiveEdge] = {}
        self._checking: asyncio.Task[None] | None = None
        self._read_tasks: set[asyncio.Task[None]] = set()
        # Multiplexed streams by owner, and whose each run is (learnt on its first wake-up
        # while anyone watches an owner; a run's owner never changes).
        self._watches: dict[str, set[OwnerWatch]] = {}
        self._owners: OrderedDict[UUID, str] = OrderedDict()
        self._unresolved: dict[UUID, int] = {}  # run -> newest seq announced (0: unknown)
        self._resolving: asyncio.Task[None] | None = None
        # Notifications heard, counted in slots of generation ids (one int per slot, however
        # many runs), and the wake-ups of every edge: ``quiet_mark``.
        self._heard_by_slot = [0] * HEARD_SLOTS
        self._woken_all = 0
        self.closing = False
        self.reads = 0  # shared and own reads of the log, for tests and benchmarks

    # --- subscriptions ------------------------------------------------------------------------

    def subscribe(
        self,
        generation_id: UUID,
        position: int = 0,
        catch_up_to: int = 0,
        quiet_since: QuietMark | None = None,
    ) -> Subscription:
        """``catch_up_to``: a seq the primary has committed (its ``last_seq`` as the stream
        opened): up to it the follower reads catch-up pages, which a standby may answer.

        ``quiet_since``: ``quiet_mark`` taken before that ``last_seq`` was read. A follower
        resuming at it, the first here, starts the edge there without reading: nothing was
        heard of the run since (a notification, or a LISTEN reconnect that may have missed
        some), so anything committed after the read is still to be announced, to this edge.
        A reconnect storm opens thousands of streams at their heads: one read each saved.
        """
        edge = self._edges.get(generation_id)
        if edge is None:
            edge = self._edges[generation_id] = LiveEdge(generation_id)
            if (
                quiet_since is not None
                and position == catch_up_to
                and quiet_since == self.quiet_mark(generation_id)
            ):
                edge.base = position
                edge.fresh_version = edge.version
        subscription = Subscription(edge, position, catch_up_to)
        subscription.closed = self.closing
        edge.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.cancel_timer()
        edge = subscription.edge
        edge.subscribers.discard(subscription)
        if not edge.subscribers and self._edges.get(edge.generation_id) is edge:
            del self._edges[edge.generation_id]

    def watch_owner(self, owner: str) -> OwnerWatch:
        watch = OwnerWatch(owner)
        watch.closed = self.closing
        self._watches.setdefault(owner, set()).add(watch)
        return watch

    def unwatch_owner(self, watch: OwnerWatch) -> None:
        watches = self._watches.get(watch.owner)
        if watches is not None:
            watches.discard(watch)
            if not watches:
                del self._watches[watch.owner]

    def quiet_mark(self, generation_id: UUID) -> QuietMark:
        """Changes whenever a notification of the run arrives (or of another in its slot) and
        whenever every edge is woken: see ``subscribe``."""
        return self._woken_all, self._heard_by_slot[hash(generation_id) % HEARD_SLOTS]

    def wake(self, generation_id: UUID, last_seq: int | None = None) -> None:
        """A notification: ``last_seq`` (when known) is the newest seq it announces.

        A wake-up for events the edge has already read is dropped: every follower short of
        them was woken by the read that brought them in.
        """
        self._heard_by_slot[hash(generation_id) % HEARD_SLOTS] += 1
        if self._watches:
            self._wake_owner_of(generation_id, last_seq)
        edge = self._edges.get(generation_id)
        if edge is None:
            return
        if last_seq is not None:
            if not edge.heard or last_seq > edge.heard[-1][0]:
                edge.heard.append((last_seq, time.time()))
            tail = edge.tail
            if tail is not None and last_seq <= tail:
                return
            edge.notified_seq = max(edge.notified_seq, last_seq)
        self._announce(edge)

    def wake_all(self) -> None:
        self._woken_all += 1
        for edge in self._edges.values():
            self._announce(edge)
        for watches in self._watches.values():
            for watch in watches:
                watch.wake()

    def _wake_owner_of(self, generation_id: UUID, seq: int | None) -> None:
        owner = self._owners.get(generation_id)
        if owner is None:
            known = self._unresolved.get(generation_id)
            self._unresolved[generation_id] = max(seq or 0, known or 0)
            if self._resolving is None:
                self._resolving = asyncio.create_task(
                    self._resolve_owners(), context=contextvars.Context()
                )
            return
        self._owners.move_to_end(generation_id)
        for watch in self._watches.get(owner, ()):
            watch.wake(generation_id, seq)

    async def _resolve_owners(self) -> None:
        """Whose runs the pending wake-ups were for, in one query per batch, then wake their
        owners' streams; on failure, every multiplexed stream (each reads for itself)."""
        try:
            while self._unresolved and self._watches:
                announced = dict(self._unresolved)
                ids = list(announced)
                self._unresolved.clear()
                try:
                    async with connection(self._pool) as conn:
                        owners = await owner_feed.select_owners(conn, ids)
                except StoreUnavailable:
                    for watches in self._watches.values():
                        for watch in watches:
                            watch.wake()
                    return
                for generation_id, owner in owners.items():
                    self._owners[generation_id] = owner
                    for watch in self._watches.get(owner, ()):
                        watch.wake(generation_id, announced[generation_id] or None)
                while len(self._owners) > OWNERS_CACHED:
                    self._owners.popitem(last=False)
        finally:
            self._resolving = None

    def _announce(self, edge: LiveEdge) -> None:
        """Something may have been appended: read it now, and wake the followers with it."""
        edge.version += 1
        if edge.base is None:
            edge.wake()  # nobody has read yet; their first reads will see it
        elif edge._reading is None:
            self._start_read(edge, edge.base + len(edge.events))
        # else: the read in flight sees the new version when it ends and starts another

    def end_streams(self) -> None:
        """Shutting down: every stream ends after its current page; new ones end at once."""
        self.closing = True
        for watches in self._watches.values():
            for watch in watches:
                watch.closed = True
                watch.wake()
        for edge in self._edges.values():
            for subscription in edge.subscribers:
                subscription.closed = True
            edge.wake()

    def __len__(self) -> int:
        return sum(len(edge.subscribers) for edge in self._edges.values())

    # --- reading ------------------------------------------------------------------------------

    async def page_after(self, subscription: Subscription, version: int) -> list[StoredEvent]:
        """The next page after ``subscription.position``, at least as new as wake-up
        ``version`` (taken by the caller when it cleared its flag): empty only when the log
        has nothing after it as of then."""
        edge = subscription.edge
        after = subscription.position
        while True:
            base, tail = edge.base, edge.tail
            if base is not None and tail is not None and base <= after < tail:
                start = after - base
                return edge.events[start : start + self._page_size]
            # Behind the edge, or (with a standby) short of the head the stream opened with: a
            # page of its own, complete up to a seq the primary is known to have (the edge's
            # base, that head). Without a standby, a stream opening reads at the edge, shared.
            behind = max(base or 0, subscription.catch_up_to if self._reads.replica else 0)
            if after < behind:
                self.reads += 1
                page = await self._reads.events_after(
                    edge.generation_id, after, self._page_size, expect=behind
                )
                metrics.CATCHUP_PAGES.inc()
                metrics.CATCHUP_EVENTS.inc(len(page))
                return page
            if after == tail and edge.fresh_version >= version:
                return []
            # At or past the edge, and the edge may be stale: read it again (once for all).
            await self._refresh(edge, after)

    async def _refresh(self, edge: LiveEdge, after: int) -> None:
        read = edge._reading or self._start_read(edge, after)
        # Waiting on an event, not on the task: a follower that goes away must not cancel
        # the read the others wait for (and asyncio.shield costs O(waiters) per waiter).
        await read.done.wait()
        error = read.error
        if error is None:
            return
        if isinstance(error, StoreUnavailable | asyncio.CancelledError):
            raise StoreUnavailable(f"reading the log failed: {error!r}") from error
        raise RuntimeError(f"the shared read of generation {edge.generation_id} failed") from error

    def _start_read(self, edge: LiveEdge, after: int) -> _Read:
        read = edge._reading = _Read()
        # In a context of its own: the stream whose wake-up started the read is one of many it
        # serves, and its request id must not label the read's log lines.
        task = asyncio.create_task(self._advance(edge, after, read), context=contextvars.Context())
        self._read_tasks.add(task)  # a reference until it ends, and for ``stop``
        task.add_done_callback(self._read_tasks.discard)
        return read

    async def _advance(self, edge: LiveEdge, after: int, read: _Read) -> None:
        """One shared read: extends the edge from its tail, or starts it at ``after`` when
        that is past it (or there is none yet). Each read releases its waiters when it ends;
        wake-ups that came in meanwhile start the next one (a read that looped until quiet
        would keep followers at the edge waiting through a burst)."""
        again = False
        try:
            started_at = edge.version
            tail = edge.tail
            start = tail if tail is not None and after <= tail else after
            page = await self._read(edge.generation_id, start)
            metrics.EDGE_READS.inc()
            if start == tail:
                edge.events.extend(page)
                self._trim(edge)
            else:
                edge.base, edge.events = start, page
            if len(page) < self._page_size:
                edge.fresh_version = started_at
            if page or start != tail:
                # Anyone waiting short of these events must look; their flags also make a
                # wake-up for events already read here safe to drop (see ``wake``).
                edge.wake()
            again = edge.version != started_at and bool(edge.subscribers)
        except (Exception, asyncio.CancelledError) as exc:
            read.error = exc
            if not isinstance(exc, StoreUnavailable | asyncio.CancelledError):
                log.exception("shared read of generation %s failed", edge.generation_id)
            edge.wake()  # events may be waiting: followers find out by reading themselves
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            edge._reading = None
            read.done.set()
            if again and (tail := edge.tail) is not None:
                self._start_read(edge, tail)

    def _trim(self, edge: LiveEdge) -> None:
        """Drop the events every follower at the edge has already been given (a follower
        mid-page holds its own slice), and beyond ``cache_max`` the oldest: a follower
        left behind by that reads its own pages, as one resuming from long ago does."""
        base = edge.base
        assert base is not None
        tail = base + len(edge.events)
        positions = [s.position for s in edge.subscribers if s.position >= base]
        keep_after = min(min(positions, default=base), tail)
        keep_after = max(keep_after, tail - self._cache_max)
        if keep_after > base:
            del edge.events[: keep_after - base]
            edge.base = keep_after
        heard = edge.heard
        if heard and heard[0][0] <= keep_after:
            del heard[: bisect.bisect_right(heard, keep_after, key=_seq)]

    def heard_at(self, generation_id: UUID, page: list[StoredEvent]) -> float | None:
        """When the notification of the oldest event in ``page`` that one announced arrived
        (PostgreSQL sends it at the commit); None for a page no notification here announced
        (a catch-up of history). The stream's own share of a delivery starts there."""
        edge = self._edges.get(generation_id)
        if edge is None or not edge.heard:
            return None
        heard = edge.heard
        at = bisect.bisect_left(heard, page[0].seq, key=_seq)
        if at == len(heard) or heard[at][0] > page[-1].seq:
            return None
        return heard[at][1]

    async def _read(self, generation_id: UUID, after: int) -> list[StoredEvent]:
        self.reads += 1
        async with connection(self._pool) as conn:
            return await event_log.select_events_after(conn, generation_id, after, self._page_size)

    # --- the check for lost wake-ups ----------------------------------------------------------

    async def check(self) -> int:
        """Wake every edge whose generation has events it has not heard of; returns how many.

        A query per ``CHECK_CHUNK`` followed generations, comparing in SQL: with 10,000 of
        them, one query returning every row stalled the loop long enough to show in p99.
        """
        edges = list(self._edges.values())
        behind = 0
        for start in range(0, len(edges), CHECK_CHUNK):
            chunk = {edge.generation_id: edge for edge in edges[start : start + CHECK_CHUNK]}
            seen = [(generation_id, edge.seen_seq()) for generation_id, edge in chunk.items()]
            async with connection(self._pool) as conn:
                ahead = await event_log.select_generations_ahead(conn, seen)
            for generation_id in ahead:
                edge = chunk[generation_id]
                if self._edges.get(generation_id) is edge:
                    behind += 1
                    self._announce(edge)
        metrics.LOST_WAKEUPS.inc(behind)
        return behind

    def start_checking(self, every_s: float) -> None:
        self._checking = asyncio.create_task(self._check_forever(every_s), name="genstream-hub")

    async def stop(self) -> None:
        """Stop the check and any shared read still in flight (before the pool closes)."""
        tasks = [
            *self._read_tasks,
            *([self._checking] if self._checking else []),
            *([self._resolving] if self._resolving else []),
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, StoreUnavailable):
                await task

    async def _check_forever(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s)
            try:
                # Usually a race with a notification still in flight, so only at debug level.
                if behind := await self.check():
                    log.debug("woke %d generation(s) behind their log", behind)
            except StoreUnavailable as exc:
                log.info("lost wake-up check skipped: %s", exc)


def _seq(heard: tuple[int, float]) -> int:
    return heard[0]
