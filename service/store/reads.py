"""Reads that may be answered by a hot standby, and never see less than the primary has.

A standby replays the primary's WAL a little behind it (about a millisecond here at a steady
append rate; seconds during a long vacuum or with replay paused). A reader must neither skip
what the primary has committed nor stall on the standby, so each read knows what it needs
before it asks:

* **A page of one log** needs a seq: the one a notification announced, or the generation's
  ``last_seq`` read from the primary when the stream opened (``events_after``'s ``expect``).
  Seqs are consecutive, so a page that reaches ``min(expect, after + limit)`` is complete and
  nothing else needs checking. That costs nothing on the primary.
* **Anything else** (the analytics, an export: many tables, no one seq to expect) needs the
  standby to have replayed the primary's WAL as of the moment the read began: the primary's
  ``pg_current_wal_insert_lsn()`` is taken *first* (not the write position: with
  ``synchronous_commit`` off a commit is visible before its WAL is written), then the
  standby's ``pg_last_wal_replay_lsn()`` compared with it (``caught_up``). Every transaction
  committed before the read began is at or below that LSN. One tiny query on the primary per read.

Either way a standby that is short of it is asked again after short pauses for up to
``wait_s``, then the primary answers: a lagging standby costs a reader time, never an event.
After such a fallback the standby is *behind* for ``BEHIND_S``: each read still asks it once
(an answer that is complete is used, and ends the spell) but does not wait for it, so a
paused or broken standby costs ``wait_s`` about once per ``BEHIND_S``, not once per page of
every catch-up. ``genstream_replica_reads`` counts where reads were answered.

Without a standby both go straight to the primary, as they did before it existed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Final
from uuid import UUID

import asyncpg

from service.errors import StoreUnavailable
from service.observe import metrics
from service.store import event_log
from service.store.db import (
    REFUSED_LOGIN_ERRORS,
    UNAVAILABLE_ERRORS,
    Connection,
    Pool,
    connection,
)
from service.store.event_log import StoredEvent

log = logging.getLogger(__name__)

BEHIND_S: Final = 1.0
"""After a fallback, how long reads ask the standby once without waiting for it."""

RETRY_PAUSES_S: Final = (0.001, 0.002, 0.005, 0.01, 0.02)
"""Pauses between asks of a lagging standby (the last one repeats until ``wait_s``)."""

# What makes the standby unable to answer, so that the primary answers instead: it is down or
# restarting, refuses the login (a wrong GENSTREAM_REPLICA_URL: logged, and counted as
# fallbacks), or cancelled the query for a conflict with replay (SQLSTATE 40001).
STANDBY_AWAY: Final[tuple[type[BaseException], ...]] = (
    StoreUnavailable,
    *UNAVAILABLE_ERRORS,
    *REFUSED_LOGIN_ERRORS,
    asyncpg.TransactionRollbackError,
)

SELECT_PRIMARY_LSN: Final = "SELECT pg_current_wal_insert_lsn()"
# True when the standby has replayed up to $1; NULL on a server that is not a standby.
SELECT_REPLAYED: Final = "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn"


class Reads:
    """Where reads that tolerate a standby go: ``replica`` when there is one, else
    ``primary``. Writes, claims, leases, key checks, the live edge and the owner feed never
    come here: they use the primary's pool directly."""

    def __init__(self, primary: Pool, replica: Pool | None = None, *, wait_s: float) -> None:
        if wait_s < 0:
            raise ValueError("wait_s must not be negative")
        self.primary = primary
        self.replica = replica
        self.wait_s = wait_s
        self._behind_until = 0.0  # loop time: until then, no waiting for the standby

    async def events_after(
        self, generation_id: UUID, after: int, limit: int, *, expect: int
    ) -> list[StoredEvent]:
        """``event_log.select_events_after``, from the standby once it has replayed the log
        up to ``expect`` (a seq the primary has committed), or as far as the page reaches."""
        if self.replica is not None:
            enough = min(expect - after, limit)
            patience = self._patience()
            while True:
                page = await self._replica_page(generation_id, after, limit)
                if page is not None and len(page) >= enough:
                    self._answered(patience, "replica")
                    return page
                if page is None or not await patience.again():
                    break
            self._answered(patience, "primary")
        async with connection(self.primary) as conn:
            return await event_log.select_events_after(conn, generation_id, after, limit)

    async def _replica_page(
        self, generation_id: UUID, after: int, limit: int
    ) -> list[StoredEvent] | None:
        """The standby's page; None when it cannot answer (down, restarting): the primary
        answers instead, so a standby's outage is never the reader's."""
        assert self.replica is not None
        try:
            async with connection(self.replica) as conn:
                return await event_log.select_events_after(conn, generation_id, after, limit)
        except STANDBY_AWAY as exc:
            self._cannot_answer(exc)
            return None

    @asynccontextmanager
    async def caught_up(self) -> AsyncIterator[Connection]:
        """A connection that sees at least every transaction committed on the primary
        before this call: the standby's once it has replayed that far (waiting up to
        ``wait_s``), else the primary's."""
        if self.replica is None:
            async with connection(self.primary) as conn:
                yield conn
            return
        # The primary's position FIRST: taken after asking the standby, it could name a commit
        # the standby's answer did not include, and the reader would see less than asked.
        async with connection(self.primary) as conn:
            target = await conn.fetchval(SELECT_PRIMARY_LSN)
        async with AsyncExitStack() as stack:
            replayed = await self._replayed(stack, target)
            if replayed is not None:
                yield replayed
            else:
                yield await stack.enter_async_context(connection(self.primary))

    async def _replayed(self, stack: AsyncExitStack, target: str) -> Connection | None:
        """A standby connection that has replayed up to ``target``, kept open in ``stack``
        (replay only moves forward, so what it has replayed stays visible); None: ask the
        primary."""
        assert self.replica is not None
        patience = self._patience()
        try:
            conn = await stack.enter_async_context(connection(self.replica))
            while not await conn.fetchval(SELECT_REPLAYED, target):
                if not await patience.again():
                    self._answered(patience, "primary")
                    return None
        except STANDBY_AWAY as exc:
            self._cannot_answer(exc)
            self._answered(patience, "primary")
            return None
        self._answered(patience, "replica")
        return conn

    def _patience(self) -> _Patience:
        behind = asyncio.get_running_loop().time() < self._behind_until
        return _Patience(0.0 if behind else self.wait_s)

    def _cannot_answer(self, exc: BaseException) -> None:
        """Said once per spell behind (a standby that is away would otherwise fill the log)."""
        if asyncio.get_running_loop().time() >= self._behind_until:
            log.warning("the standby cannot answer, the primary does: %r", exc)

    def _answered(self, patience: _Patience, where: str) -> None:
        """Count where a read was answered; a fallback starts (or extends) a spell behind,
        an answer from the standby ends it."""
        if where == "primary":
            self._behind_until = asyncio.get_running_loop().time() + BEHIND_S
        else:
            self._behind_until = 0.0
            if patience.waited:
                where = "replica_waited"
        metrics.REPLICA_READS.labels(where).inc()


class _Patience:
    """How long one read keeps asking a lagging standby."""

    __slots__ = ("_give_up_at", "_pauses", "waited")

    def __init__(self, wait_s: float) -> None:
        self._give_up_at = asyncio.get_running_loop().time() + wait_s
        self._pauses = iter(RETRY_PAUSES_S)
        self.waited = False

    async def again(self) -> bool:
        """Pause before the next ask (the last one up to the bound); False once it is spent."""
        left = self._give_up_at - asyncio.get_running_loop().time()
        if left <= 0:
            return False
        await asyncio.sleep(min(next(self._pauses, RETRY_PAUSES_S[-1]), left))
        self.waited = True
        return True
