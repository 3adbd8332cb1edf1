"""Following one generation's log: replay after a seq, then live, each event exactly once.

Application logic with no HTTP in it: ``api/stream.py`` turns what it yields into SSE frames.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar
from uuid import UUID

from service.errors import InvalidRequest, StoreUnavailable
from service.store import event_log
from service.store.db import Pool, connection
from service.store.event_log import Head, StoredEvent
from service.streams.hub import Hub, QuietMark


class Keepalive:
    """Yielded when nothing happened for a keepalive interval."""


KEEPALIVE: Final = Keepalive()
T = TypeVar("T")
OUTAGE_RETRY_MAX_S: Final = 2.0
KEEPALIVE_JITTER: Final = 0.2


async def head(pool: Pool, generation_id: UUID, owner: str | None = None) -> Head:
    """With ``owner``: only their run's (someone else's is a 404, as ``select_head`` says)."""
    async with connection(pool) as conn:
        return await event_log.select_head(conn, generation_id, owner)


def has_events_after(head: Head, after: int) -> bool:
    """Whether a stream resuming after ``after`` has anything left to send.

    False when the generation is finished and ``after`` is at or past its terminal event (the
    API answers 204 so EventSource stops). A seq beyond the last one of a running generation
    was never sent by us: the client is confused, and we say so rather than skip events.
    """
    if after < 0:
        raise InvalidRequest("the resume point must be a non-negative integer")
    if head.is_finished:
        return after < head.last_seq
    if after > head.last_seq:
        raise InvalidRequest(
            f"cannot resume after seq {after}: the generation's last event is {head.last_seq}"
        )
    return True


@dataclass(frozen=True, slots=True)
class Streams:
    """What every stream of this process shares: the hub, and how long an idle stream waits
    before it sends a keepalive."""

    hub: Hub
    keepalive_s: float

    def keepalive_wait_s(self) -> float:
        """A little under the interval, at random: streams opened together (a deploy, a
        reconnect storm) drift apart instead of all sending keepalives in the same tick."""
        return self.keepalive_s * (1.0 - KEEPALIVE_JITTER * random.random())


async def once_available(
    streams: Streams, read: Callable[[], Awaitable[T]]
) -> AsyncIterator[T | Keepalive]:
    """For a stream that answered 200 while PostgreSQL is unavailable: a keepalive after each
    failed ``read``, backing off to ``OUTAGE_RETRY_MAX_S``, then what it read once the
    database answers. Ends without it when the process shuts down meanwhile.

    An EventSource answered 503 gives up for good, so the client is kept, as an open stream is
    kept through an outage (``follow``). A read is cut at the keepalive interval: a database
    that does not answer (rather than refusing) must not keep the client waiting for a line
    past it.
    """
    outage = 0.0
    while not streams.hub.closing:
        try:
            async with asyncio.timeout(streams.keepalive_s):
                found = await read()
        except (StoreUnavailable, TimeoutError):
            outage = min(max(outage * 2, 0.1), OUTAGE_RETRY_MAX_S)
            await asyncio.sleep(outage)
            yield KEEPALIVE
            continue
        yield found
        return


async def follow(
    streams: Streams,
    generation_id: UUID,
    after: int,
    head_seq: int = 0,
    quiet_since: QuietMark | None = None,
) -> AsyncGenerator[list[StoredEvent] | Keepalive, None]:
    """Every event with seq > ``after`` in order, then live ones, ending with the terminal one
    that is the log's last (a retried run's log goes on after its first);
    in pages (one per read), so the caller can write a page to the socket in one send.

    Holds a database connection only while reading a page, and at the live edge not even
    that: the hub reads once for all followers of a generation. An idle follower costs a
    subscription and a flag. ``head_seq``: the generation's last seq as the primary had it
    when the stream opened; the pages up to it are a catch-up, which a standby may answer.
    ``quiet_since``: the hub's ``quiet_mark`` from before that head was read.
    """
    hub = streams.hub
    keepalive_s = streams.keepalive_wait_s()  # one draw per stream: its deadlines only grow
    # Subscribe BEFORE the first read: an event committed after our read but before we
    # subscribed would otherwise wake nobody. And clear the flag BEFORE each read: a wake-up
    # that lands while we read stays set, so the next wait returns at once and we re-read.
    subscription = hub.subscribe(generation_id, after, head_seq, quiet_since)
    try:
        outage = 0.0
        at_terminal = False  # the last event sent was a terminal one
        while not subscription.closed:
            subscription.clear()
            try:
                page = await hub.page_after(subscription, subscription.edge.version)
            except StoreUnavailable:
                # PostgreSQL is restarting: keep the client (an EventSource that reconnects
                # into a 503 gives up for good), and read again once it answers.
                outage = min(max(outage * 2, 0.1), OUTAGE_RETRY_MAX_S)
                if not subscription.closed:
                    # The failed read woke everyone, us too: a set flag would end the
                    # backoff at once. We read again after it anyway, so nothing is missed.
                    subscription.clear()
                await subscription.wait(outage)
                yield KEEPALIVE
                continue
            outage = 0.0
            if page:
                subscription.position = page[-1].seq
                yield page
                at_terminal = page[-1].is_terminal
                continue  # there may be more: ask again before waiting
            if at_terminal:
                # Nothing after a terminal event: the end of the log. (After one inside the
                # log, a generation.retried came: the run went on, and so did the stream.)
                return
            if not await subscription.wait(keepalive_s):
                yield KEEPALIVE
    finally:
        hub.unsubscribe(subscription)
