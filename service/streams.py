"""Following one generation's log: replay after a seq, then live, each event exactly once.

This is application logic with no HTTP in it; ``api/stream.py`` turns what it yields into SSE.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final
from uuid import UUID

from service.errors import Conflict, InvalidRequest, StoreUnavailable
from service.hub import Hub
from service.store import event_log
from service.store.db import Pool, connection
from service.store.event_log import Head, StoredEvent


class Keepalive:
    """Yielded when nothing happened for a keepalive interval."""


KEEPALIVE: Final = Keepalive()
OUTAGE_RETRY_MAX_S: Final = 2.0
REPLAY_GAP_MAX_S: Final = 2.0  # a pause longer than this in the recording is cut to it
REPLAY_SPEED_MAX: Final = 100.0
KEEPALIVE_JITTER: Final = 0.2


@dataclass(frozen=True, slots=True)
class Follow:
    hub: Hub
    keepalive_s: float

    def keepalive_wait_s(self) -> float:
        """A little under the interval, at random: streams opened together (a deploy, a
        reconnect storm) drift apart instead of all sending keepalives in the same tick."""
        return self.keepalive_s * (1.0 - KEEPALIVE_JITTER * random.random())


async def head(pool: Pool, generation_id: UUID) -> Head:
    async with connection(pool) as conn:
        return await event_log.select_head(conn, generation_id)


def check_resume_point(head: Head, after: int) -> bool:
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


async def follow(
    settings: Follow, generation_id: UUID, after: int
) -> AsyncIterator[list[StoredEvent] | Keepalive]:
    """Every event with seq > ``after`` in order, then live ones, ending with the terminal one;
    in pages (one per read), so the caller can write a page to the socket in one send.

    Holds a database connection only while reading a page, and at the live edge not even
    that: the hub reads once for all followers of a generation. An idle follower costs a
    subscription and a flag.
    """
    hub = settings.hub
    keepalive_s = settings.keepalive_wait_s()  # one draw per stream: its deadlines only grow
    # Subscribe BEFORE the first read: an event committed after our read but before we
    # subscribed would otherwise wake nobody. And clear the flag BEFORE each read: a wake-up
    # that lands while we read stays set, so the next wait returns at once and we re-read.
    subscription = hub.subscribe(generation_id, after)
    try:
        outage = 0.0
        while not subscription.closed:
            subscription.clear()
            try:
                page = await hub.page_after(subscription, subscription.feed.version)
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
                for index, event in enumerate(page):
                    if event.is_terminal:
                        yield page[: index + 1]
                        return
                yield page
                continue  # there may be more: ask again before waiting
            if not await subscription.wait(keepalive_s):
                yield KEEPALIVE
    finally:
        hub.unsubscribe(subscription)


def check_replay(head: Head, speed: float) -> None:
    """Replaying at the recorded pace is for finished generations: a running one is
    followed live, and its pace is the real one already."""
    if not 0 < speed <= REPLAY_SPEED_MAX:
        raise InvalidRequest(f"speed must be above 0 and at most {REPLAY_SPEED_MAX:g}")
    if not head.is_finished:
        raise Conflict(
            "pace=recorded replays finished generations; this one is "
            f"{head.status}: follow it without pace"
        )


async def paced(
    pages: AsyncIterator[list[StoredEvent] | Keepalive], speed: float
) -> AsyncIterator[list[StoredEvent] | Keepalive]:
    """The same events one at a time, each after the pause that preceded it when it was
    recorded (divided by ``speed``, at most ``REPLAY_GAP_MAX_S``): a past run as it
    happened, for demos and for watching what a run did."""
    previous: float | None = None
    async for page in pages:
        if isinstance(page, Keepalive):
            yield page
            continue
        for event in page:
            recorded = _timestamp(event)
            if previous is not None:
                await asyncio.sleep(min(max(recorded - previous, 0.0), REPLAY_GAP_MAX_S) / speed)
            previous = recorded
            yield [event]


def _timestamp(event: StoredEvent) -> float:
    """Seconds since the epoch of the event's ``timestamp`` (the contract's ISO-8601 UTC)."""
    stamp: str = json.loads(event.json)["timestamp"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
