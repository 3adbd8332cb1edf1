"""Following every run of one owner over one stream, each run's events exactly once, in order.

A browser allows six HTTP/1.1 connections per origin: a dashboard that followed each run on a
stream of its own would stall at the seventh. This follows them all on one.

How, in two phases:

* **Catch-up.** In one REPEATABLE READ snapshot: its *horizon* (every transaction older than
  it is in the snapshot, committed or not at all), the owner's runs to start with (unfinished
  ones, and any with an event at or past the horizon) and how far each one's log reaches in
  the snapshot. Then each run's events (or its snapshot, with ``snapshot``) up to there, read
  by seq: those never change, so the reads need no snapshot of their own.
* **Feed.** The owner's events in the global feed's order ``(tx_id, generation_id, seq)``
  from the horizon on, each once no transaction that could commit before it is still
  running (``store/owner_feed.py``): a later commit can never land behind the position, so
  the position is a resume point. An event already sent (by the catch-up, or ahead of its
  turn, below) is skipped; a run seen for the first time resumes after its last event at or
  before the position.

Within one run, feed order is almost always seq order; when two appends to one run race, the
feed may bring seq 7 before seq 6 (transaction ids are taken before the row lock that orders
the appends). Seq 6 is committed by then (7 waited for it), so it is read by seq and sent
first, *ahead* of the feed. The cursor names each run with events sent ahead of its position
(its last seq sent, and the newest transaction those could be in), until the position passes
them; in steady state there is none and a cursor is 46 characters.

The cursor is the resume point of every frame (its SSE ``id``): resuming from it sends exactly
what came after that frame, in both phases; ``api/cursors.py`` writes it as text.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Final
from uuid import UUID

from service.errors import InvalidRequest, StoreUnavailable
from service.store import owner_feed
from service.store.db import Connection, Pool, connection
from service.store.event_log import NIL_UUID, FeedPosition
from service.store.owner_feed import FeedRow
from service.streams import snapshots
from service.streams.follow import KEEPALIVE, OUTAGE_RETRY_MAX_S, Keepalive, Streams

PAGE_SIZE: Final = 500
# An event announced but not yet readable (an older transaction is still open somewhere):
# read again after these waits, then at the keepalive interval (an announcement may also be
# stale: its event was sent before it arrived, or belongs to a run out of this stream's scope).
HORIZON_RETRIES_S: Final = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 1.0, 1.0)


@dataclass(frozen=True, slots=True)
class Ahead:
    """A run with events sent past the cursor's position: up to ``seq``, in transactions up
    to ``until_tx``."""

    seq: int
    until_tx: int


@dataclass(frozen=True, slots=True)
class OwnerCursor:
    """Where a multiplexed stream is. ``catching_up``: in the catch-up of the horizon
    ``position.tx_id`` (runs in ``ahead`` sent up to their seq, the others not yet);
    otherwise every owner event at or before ``position`` was sent, and those in ``ahead``
    up to their seq."""

    position: FeedPosition = field(default_factory=FeedPosition)
    catching_up: bool = True
    ahead: dict[UUID, Ahead] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OwnerFrame:
    """An event (or with ``type`` ``snapshot``, a run's snapshot) and the cursor after it."""

    generation_id: UUID
    seq: int
    type: str
    json: str
    cursor: OwnerCursor


@dataclass(frozen=True, slots=True)
class CursorMark:
    """The stream's resume point moved with no frame to carry it (the catch-up ended, or the
    feed moved past other owners' events): sent as an id alone, which EventSource keeps as
    its last event id without dispatching anything. Without it, a stream that never sent a
    frame would resume as a fresh one, and miss a run created and finished meanwhile."""

    cursor: OwnerCursor


class _Follow:
    """One stream's state: what it sent, and the cursor that says so."""

    def __init__(self, pool: Pool, owner: str, cursor: OwnerCursor, page_size: int) -> None:
        self.pool = pool
        self.owner = owner
        self.page_size = page_size
        self.position = cursor.position
        self.catching_up = cursor.catching_up
        self.sent: dict[UUID, int] = {run: ahead.seq for run, ahead in cursor.ahead.items()}
        self.until: dict[UUID, int] = {run: ahead.until_tx for run, ahead in cursor.ahead.items()}
        self._cursor: OwnerCursor | None = None
        self._owner_since: int | None = None

    async def _since(self, conn: Connection) -> int:
        """The owner index's mark, read once: a migration moves it only while nothing runs."""
        if self._owner_since is None:
            self._owner_since = await owner_feed.select_owner_since(conn)
        return self._owner_since

    def cursor(self) -> OwnerCursor:
        if self._cursor is None:
            ahead = {run: Ahead(self.sent[run], until) for run, until in self.until.items()}
            self._cursor = OwnerCursor(self.position, self.catching_up, ahead)
        return self._cursor

    def _frame(self, run: UUID, seq: int, kind: str, text: str) -> OwnerFrame:
        self.sent[run] = seq
        self._cursor = None
        return OwnerFrame(run, seq, kind, text, self.cursor())

    # --- catch-up --------------------------------------------------------------------------

    async def catch_up(self, with_snapshots: bool) -> AsyncGenerator[list[OwnerFrame], None]:
        async with (
            connection(self.pool) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            bounds = await owner_feed.select_snapshot_bounds(conn)
            horizon = self.position.tx_id or bounds.horizon
            runs = await owner_feed.select_live_runs(
                conn, self.owner, horizon, await self._since(conn)
            )
            taken = {}
            if with_snapshots:
                for run, _ in runs:
                    if not self.sent.get(run) and (snapshot := await snapshots.read(conn, run)):
                        taken[run] = snapshot
        self.position = FeedPosition(horizon, NIL_UUID, 0)
        # Every event in the snapshot is in a transaction older than xmax (or the horizon).
        until = max(bounds.xmax - 1, horizon)
        for run, last_seq in runs:
            self.sent.setdefault(run, 0)
            self.until[run] = until
            self._cursor = None
            if (snapshot := taken.get(run)) is not None:
                yield [self._frame(run, snapshot.seq, "snapshot", snapshot.json)]
            while self.sent[run] < last_seq:
                async with connection(self.pool) as conn:
                    rows = await owner_feed.select_run_page(
                        conn, run, self.sent[run], last_seq, self.page_size
                    )
                if not rows:  # a log cut short behind its row (`audit verify` says where)
                    raise RuntimeError(f"run {run}: seq {self.sent[run] + 1} is missing")
                yield [self._frame(run, row.position.seq, row.type, row.json) for row in rows]
        self.catching_up = False
        self._cursor = None

    # --- feed --------------------------------------------------------------------------------

    async def read(self) -> tuple[list[OwnerFrame], bool]:
        """The next page of the owner feed as frames; and whether the page was full."""
        async with connection(self.pool) as conn:
            rows, horizon = await owner_feed.select_owner_feed(
                conn, self.owner, self.position, self.page_size, await self._since(conn)
            )
            unknown = list(
                dict.fromkeys(
                    row.position.generation_id
                    for row in rows
                    if row.position.generation_id not in self.sent
                )
            )
            if unknown:
                self.sent.update(await owner_feed.select_seqs_at(conn, unknown, self.position))
            frames: list[OwnerFrame] = []
            for row in rows:
                await self._accept(conn, row, frames)
        full = len(rows) == self.page_size
        if not full and horizon > self.position.tx_id:
            # Every owner event below the horizon was in this page: move past the others'
            # events, or the next read of a quiet owner walks them all again.
            self.position = FeedPosition(horizon, NIL_UUID, 0)
            self._expire()
        return frames, full

    async def _accept(self, conn: Connection, row: FeedRow, frames: list[OwnerFrame]) -> None:
        run, seq = row.position.generation_id, row.position.seq
        if seq - self.sent[run] > self.page_size:
            # Two racing appends leave a gap of one or two; more is a cursor we did not write.
            raise InvalidRequest("invalid cursor: pass back a frame's id exactly as received")
        while seq > self.sent[run] + 1:  # an earlier seq comes later in the feed: send it now
            gap = await owner_feed.select_run_page(
                conn, run, self.sent[run], seq - 1, self.page_size
            )
            if not gap:
                raise RuntimeError(f"run {run}: seq {self.sent[run] + 1} is missing from its log")
            self.until[run] = max(self.until.get(run, 0), *(e.position.tx_id for e in gap))
            frames.extend(self._frame(run, e.position.seq, e.type, e.json) for e in gap)
        self.position = row.position
        if seq > self.sent[run]:
            frames.append(self._frame(run, seq, row.type, row.json))
        self._expire()

    def _expire(self) -> None:
        """Forget the runs whose events sent ahead the position has now passed."""
        for run in [run for run, until in self.until.items() if until < self.position.tx_id]:
            del self.until[run]
        self._cursor = None


async def follow_owner(
    streams: Streams,
    pool: Pool,
    owner: str,
    cursor: OwnerCursor,
    *,
    with_snapshots: bool = False,
    page_size: int = PAGE_SIZE,
    max_s: float | None = None,
) -> AsyncGenerator[list[OwnerFrame] | CursorMark | Keepalive, None]:
    """Every event of the owner's runs after ``cursor`` (a fresh one: the unfinished runs
    from their first event, or their snapshots), then live ones, for ``max_s`` or as long as
    the caller reads; a keepalive when nothing happened for the keepalive interval."""
    hub = streams.hub
    watch = hub.watch_owner(owner)  # before the first read: a wake-up after it is not lost
    state = _Follow(pool, owner, cursor, page_size)
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + max_s if max_s is not None else float("inf")
    try:
        if state.catching_up:
            # Closed here: a catch-up holds a connection and its transaction while it yields.
            async with contextlib.aclosing(state.catch_up(with_snapshots)) as pages:
                async for page in pages:
                    if page:
                        yield page
                    if watch.closed:
                        return  # shutting down: the client resumes from the last frame's id
            yield CursorMark(state.cursor())  # the feed phase's first resume point
        written = state.cursor()
        outage = 0.0
        retries = iter(HORIZON_RETRIES_S)
        keepalive_s = streams.keepalive_wait_s()
        quiet_since = loop.time()
        while not watch.closed and loop.time() < ends_at:
            if loop.time() - quiet_since >= keepalive_s:
                if state.cursor() != written:
                    written = state.cursor()
                    yield CursorMark(written)  # also a keepalive
                else:
                    yield KEEPALIVE
                quiet_since = loop.time()
            watch.clear()
            try:
                frames, full = await state.read()
            except StoreUnavailable:
                outage = min(max(outage * 2, 0.1), OUTAGE_RETRY_MAX_S)
                await asyncio.sleep(outage)
                yield KEEPALIVE
                quiet_since = loop.time()
                continue
            outage = 0.0
            if frames:
                retries = iter(HORIZON_RETRIES_S)
                written = frames[-1].cursor
                yield frames
                quiet_since = loop.time()
            if full:
                continue
            if watch.pending(state.sent) and (pause := next(retries, None)) is not None:
                # Announced, not readable yet: an older transaction is still open somewhere
                # (its end notifies nobody if it appended nothing). Look again soon; past the
                # last retry, the keepalive's read (or the next wake-up) finds it.
                await watch.wait(pause)
            else:
                watch.forget_all()
                idle = keepalive_s - (loop.time() - quiet_since)
                if await watch.wait(max(min(idle, ends_at - loop.time()), 0.0)):
                    retries = iter(HORIZON_RETRIES_S)  # a new announcement: retries of its own
    finally:
        hub.unwatch_owner(watch)
