"""Replaying a finished generation at the pace it was recorded, for demos and for watching
what a run did: each event after the pause that preceded it, divided by a speed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Final

from service.errors import Conflict, InvalidRequest
from service.store.event_log import Head, StoredEvent
from service.streams.follow import KEEPALIVE, Keepalive

REPLAY_GAP_MAX_S: Final = 2.0  # a pause longer than this in the recording is cut to it
REPLAY_SPEED_MIN: Final = 0.01  # the longest pause is then 200 s, filled with keepalives
REPLAY_SPEED_MAX: Final = 100.0


def check_speed(speed: float) -> None:
    if not REPLAY_SPEED_MIN <= speed <= REPLAY_SPEED_MAX:  # NaN compares false: refused too
        raise InvalidRequest(
            f"speed must be from {REPLAY_SPEED_MIN:g} to {REPLAY_SPEED_MAX:g}, got {speed:g}"
        )


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
    pages: AsyncGenerator[list[StoredEvent] | Keepalive, None],
    speed: float,
    keepalive_s: float | None = None,
) -> AsyncGenerator[list[StoredEvent] | Keepalive, None]:
    """The same events one at a time, each after the pause that preceded it when it was
    recorded (divided by ``speed``, at most ``REPLAY_GAP_MAX_S``).

    A pause longer than ``keepalive_s`` is taken in steps of it, each followed by a
    keepalive: a stream owes its client a line at least that often (None: no keepalives, for
    callers that are not streams)."""
    previous: float | None = None
    async with contextlib.aclosing(pages):
        async for page in pages:
            if isinstance(page, Keepalive):
                yield page
                continue
            for event in page:
                recorded = _timestamp(event)
                if previous is not None:
                    pause = min(max(recorded - previous, 0.0), REPLAY_GAP_MAX_S) / speed
                    while keepalive_s is not None and pause > keepalive_s:
                        await asyncio.sleep(keepalive_s)
                        pause -= keepalive_s
                        yield KEEPALIVE
                    await asyncio.sleep(pause)
                previous = recorded
                yield [event]


def _timestamp(event: StoredEvent) -> float:
    """Seconds since the epoch of the event's ``timestamp`` (the contract's ISO-8601 UTC)."""
    stamp: str = json.loads(event.json)["timestamp"]
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
