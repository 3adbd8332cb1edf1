"""Replaying a finished generation at the pace it was recorded, for demos and for watching
what a run did: each event after the pause that preceded it, divided by a speed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Final

from service.errors import Conflict, InvalidRequest
from service.store.event_log import Head, StoredEvent
from service.streams.follow import Keepalive

REPLAY_GAP_MAX_S: Final = 2.0  # a pause longer than this in the recording is cut to it
REPLAY_SPEED_MAX: Final = 100.0


def check_speed(speed: float) -> None:
    if not 0 < speed <= REPLAY_SPEED_MAX:
        raise InvalidRequest(f"speed must be above 0 and at most {REPLAY_SPEED_MAX:g}")


def check_replayable(head: Head, speed: float) -> None:
    """Replaying at the recorded pace is for finished generations: a running one is
    followed live, and its pace is the real one already."""
    check_speed(speed)
    if not head.is_finished:
        raise Conflict(
            "pace=recorded replays finished generations; this one is "
            f"{head.status}: follow it without pace"
        )


async def paced(
    pages: AsyncIterator[list[StoredEvent] | Keepalive], speed: float
) -> AsyncIterator[list[StoredEvent] | Keepalive]:
    """The same events one at a time, each after the pause that preceded it when it was
    recorded (divided by ``speed``, at most ``REPLAY_GAP_MAX_S``)."""
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
