"""Replay at the recorded pace: the pauses it takes are the recorded ones, divided by the
speed and cut to REPLAY_GAP_MAX_S; only finished generations, at sane speeds."""

from __future__ import annotations

import types
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta

import pytest

from service.errors import Conflict, InvalidRequest
from service.events import Status
from service.store.event_log import Head, StoredEvent
from service.streams import pacing
from service.streams.follow import KEEPALIVE, Keepalive

START = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)


def event(seq: int, seconds_in: float) -> StoredEvent:
    stamp = (START + timedelta(seconds=seconds_in)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return StoredEvent(seq, "llm.delta", f'{{"seq":{seq},"timestamp":"{stamp}"}}')


async def pages(
    *items: list[StoredEvent] | Keepalive,
) -> AsyncGenerator[list[StoredEvent] | Keepalive, None]:
    for item in items:
        yield item


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses ``paced`` asks for, taken at once: the arithmetic, not the clock."""
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)

    monkeypatch.setattr(pacing, "asyncio", types.SimpleNamespace(sleep=sleep))
    return asked


async def test_each_event_comes_alone_after_its_recorded_pause_divided_by_the_speed(
    pauses: list[float],
) -> None:
    recorded = [event(1, 0.0), event(2, 0.5), event(3, 0.5), event(4, 1.7)]
    out = [item async for item in pacing.paced(pages(recorded[:3], [recorded[3]]), speed=2.0)]

    assert out == [[one] for one in recorded]
    assert pauses == pytest.approx([0.25, 0.0, 0.6])


async def test_long_pauses_are_cut_and_a_clock_that_went_back_waits_nothing(
    pauses: list[float],
) -> None:
    recorded = [event(1, 10.0), event(2, 100.0), event(3, 99.0)]
    out = [item async for item in pacing.paced(pages(recorded), speed=1.0)]

    assert len(out) == 3
    assert pauses == [pacing.REPLAY_GAP_MAX_S, 0.0]


async def test_keepalives_pass_through_unpaced(pauses: list[float]) -> None:
    out = [item async for item in pacing.paced(pages(KEEPALIVE, [event(1, 0.0)]), speed=1.0)]
    assert out == [KEEPALIVE, [event(1, 0.0)]]
    assert pauses == []


@pytest.mark.parametrize(
    "speed",
    [
        0.0,
        -1.0,
        pacing.REPLAY_SPEED_MAX + 0.1,
        # A 2 s pause divided by 1e-300 is a stream silent for ever.
        1e-300,
        pacing.REPLAY_SPEED_MIN / 2,
        float("nan"),
        float("inf"),
    ],
)
def test_a_speed_out_of_range_is_invalid(speed: float) -> None:
    with pytest.raises(InvalidRequest, match="speed"):
        pacing.check_speed(speed)


@pytest.mark.parametrize("speed", [pacing.REPLAY_SPEED_MIN, 1.0, pacing.REPLAY_SPEED_MAX])
def test_a_speed_in_range_is_accepted(speed: float) -> None:
    pacing.check_speed(speed)


async def test_a_pause_longer_than_the_keepalive_interval_sends_keepalives_through_it(
    pauses: list[float],
) -> None:
    """At the slowest speed a recorded pause lasts up to REPLAY_GAP_MAX_S / REPLAY_SPEED_MIN
    (200 s): the contract wants a line at least every keepalive interval meanwhile."""
    recorded = [event(1, 0.0), event(2, 1.0), event(3, 1.05)]
    out = [
        item
        async for item in pacing.paced(pages(recorded), speed=0.1, keepalive_s=3.0)  # 10 s
    ]

    assert out == [[recorded[0]], KEEPALIVE, KEEPALIVE, KEEPALIVE, [recorded[1]], [recorded[2]]]
    assert pauses == pytest.approx([3.0, 3.0, 3.0, 1.0, 0.5])
    assert sum(pauses) == pytest.approx(10.5)


async def test_the_slowest_replay_never_pauses_longer_than_the_keepalive_interval(
    pauses: list[float],
) -> None:
    recorded = [event(1, 0.0), event(2, 3600.0)]
    out = [
        item
        async for item in pacing.paced(
            pages(recorded), speed=pacing.REPLAY_SPEED_MIN, keepalive_s=15.0
        )
    ]

    assert max(pauses) <= 15.0
    assert sum(pauses) == pytest.approx(pacing.REPLAY_GAP_MAX_S / pacing.REPLAY_SPEED_MIN)
    assert out.count(KEEPALIVE) == len(pauses) - 1 == 13


@pytest.mark.parametrize("status", [Status.QUEUED, Status.RUNNING])
def test_only_a_finished_generation_is_replayable(status: Status) -> None:
    with pytest.raises(Conflict, match="follow it without pace"):
        pacing.check_replayable(Head(status, 3), 1.0)
    for finished in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED):
        pacing.check_replayable(Head(finished, 3), 1.0)
