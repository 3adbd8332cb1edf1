from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from uuid import UUID, uuid4

import pytest

from service.errors import StoreUnavailable
from service.observe import metrics
from service.store.db import Pool
from service.store.event_log import StoredEvent
from service.streams import hub as hub_module
from service.streams.follow import KEEPALIVE, Streams, follow
from service.streams.hub import Hub, Subscription
from tests.helpers import append, delta, new_generation


async def take(hub: Hub, subscription: Subscription) -> list[int]:
    """What a follower does once woken: clear, read after its position, move past the page."""
    subscription.clear()
    page = await hub.page_after(subscription, subscription.edge.version)
    if page:
        subscription.position = page[-1].seq
    return [event.seq for event in page]


# --- wake-ups ---------------------------------------------------------------------------------


async def test_a_woken_subscription_returns_true_from_wait(pool: Pool) -> None:
    hub = Hub(pool)
    generation_id = uuid4()
    subscription = hub.subscribe(generation_id)
    hub.wake(generation_id)
    assert await subscription.wait(5) is True


async def test_wait_returns_false_after_the_timeout_without_a_wake(pool: Pool) -> None:
    subscription = Hub(pool).subscribe(uuid4())
    assert await subscription.wait(0.05) is False


async def test_a_timeout_comes_at_the_newest_deadline_whether_it_is_sooner_or_later(
    pool: Pool,
) -> None:
    loop = asyncio.get_running_loop()
    hub = Hub(pool)
    generation_id = uuid4()
    subscription = hub.subscribe(generation_id)
    waiting = asyncio.ensure_future(subscription.wait(5))
    await asyncio.sleep(0.05)
    hub.wake(generation_id)
    assert await waiting is True
    subscription.clear()

    started = loop.time()
    assert await subscription.wait(0.1) is False  # sooner than the 5 s armed before
    assert 0.09 < loop.time() - started < 2

    subscription.clear()
    first = asyncio.ensure_future(subscription.wait(0.1))
    await asyncio.sleep(0.05)
    hub.wake(generation_id)
    assert await first is True
    subscription.clear()
    started = loop.time()
    assert await subscription.wait(0.3) is False  # later than the 0.1 s armed before
    assert loop.time() - started > 0.29
    hub.unsubscribe(subscription)


async def test_a_wake_while_waiting_ends_the_wait(pool: Pool) -> None:
    hub = Hub(pool)
    generation_id = uuid4()
    subscription = hub.subscribe(generation_id)
    waiting = asyncio.ensure_future(subscription.wait(5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    hub.wake(generation_id)
    assert await asyncio.wait_for(waiting, 5) is True


async def test_wake_reaches_only_that_generations_subscriptions(pool: Pool) -> None:
    hub = Hub(pool)
    first, other = uuid4(), uuid4()
    a, b = hub.subscribe(first), hub.subscribe(first)
    c = hub.subscribe(other)
    hub.wake(first)
    assert await a.wait(1) is True
    assert await b.wait(1) is True
    assert await c.wait(0.05) is False


async def test_a_wake_stays_set_until_cleared(pool: Pool) -> None:
    hub = Hub(pool)
    generation_id = uuid4()
    subscription = hub.subscribe(generation_id)
    hub.wake(generation_id)
    assert await subscription.wait(1) is True
    assert await subscription.wait(1) is True  # level-triggered: still set
    subscription.clear()
    assert await subscription.wait(0.05) is False


async def test_wake_all_wakes_every_subscription(pool: Pool) -> None:
    hub = Hub(pool)
    subscriptions = [hub.subscribe(uuid4()) for _ in range(3)] + [hub.subscribe(uuid4())]
    hub.wake_all()
    for subscription in subscriptions:
        assert await subscription.wait(1) is True


def test_wake_of_a_generation_nobody_follows_is_harmless(pool: Pool) -> None:
    hub = Hub(pool)
    hub.wake(uuid4())
    hub.wake(uuid4(), 7)
    hub.wake_all()
    assert len(hub) == 0


def test_unsubscribing_the_last_subscription_removes_the_generation(pool: Pool) -> None:
    hub = Hub(pool)
    generation_id = uuid4()
    a, b = hub.subscribe(generation_id), hub.subscribe(generation_id)
    assert len(hub) == 2
    hub.unsubscribe(a)
    assert len(hub) == 1
    assert generation_id in hub._edges
    hub.unsubscribe(b)
    assert len(hub) == 0
    assert generation_id not in hub._edges
    hub.unsubscribe(b)  # twice is harmless
    assert len(hub) == 0


async def test_an_unsubscribed_subscription_is_no_longer_woken(pool: Pool) -> None:
    hub = Hub(pool)
    generation_id = uuid4()
    subscription = hub.subscribe(generation_id)
    hub.unsubscribe(subscription)
    hub.wake(generation_id)
    assert await subscription.wait(0.05) is False


async def test_close_marks_existing_and_future_subscriptions_closed_and_wakes_them(
    pool: Pool,
) -> None:
    hub = Hub(pool)
    existing = hub.subscribe(uuid4())
    assert not existing.closed
    hub.end_streams()
    assert existing.closed
    assert await existing.wait(1) is True
    later = hub.subscribe(uuid4())
    assert later.closed


# --- shared reads -----------------------------------------------------------------------------


async def test_followers_of_one_generation_share_one_read_per_wake_up(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    followers = [hub.subscribe(generation_id) for _ in range(50)]
    assert [await take(hub, f) for f in followers] == [[1]] * 50
    assert hub.reads == 1

    last_seq = await append(pool, generation_id, delta(1), delta(2))
    hub.wake(generation_id, last_seq)
    pages = await asyncio.gather(*(take(hub, f) for f in followers))

    assert pages == [[2, 3]] * 50
    assert hub.reads == 2
    assert await asyncio.gather(*(take(hub, f) for f in followers)) == [[]] * 50
    assert hub.reads == 2  # nothing new was announced: the edge is fresh


async def test_a_first_follower_at_a_head_read_in_quiet_starts_the_edge_without_a_read(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    head = await append(pool, generation_id, delta(1))
    hub = Hub(pool)
    quiet = hub.quiet_mark(generation_id)
    follower = hub.subscribe(generation_id, head, head, quiet_since=quiet)
    assert await take(hub, follower) == []
    assert hub.reads == 0

    # What is committed after the head was read is announced to the edge, and read then.
    last_seq = await append(pool, generation_id, delta(2))
    hub.wake(generation_id, last_seq)
    assert await follower.wait(5) is True
    assert await take(hub, follower) == [3]
    assert hub.reads == 1


@pytest.mark.parametrize(
    "heard",
    ["a notification of the run", "a LISTEN reconnect", "another follower's edge", "not at it"],
)
async def test_a_follower_reads_at_the_head_unless_nothing_was_heard_since_it_was_read(
    pool: Pool, heard: str
) -> None:
    """An event committed between the head's read and the subscription was announced to
    nobody here (no edge yet): the edge must read instead of trusting the head."""
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    quiet = hub.quiet_mark(generation_id)
    head = await append(pool, generation_id, delta(1))  # read as the head
    position = head
    last_seq = await append(pool, generation_id, delta(2))  # committed after the read
    if heard == "a notification of the run":
        hub.wake(generation_id, last_seq)
    elif heard == "a LISTEN reconnect":
        hub.wake_all()
    elif heard == "another follower's edge":
        hub.subscribe(generation_id, head, head)
    else:
        position = head - 1
    follower = hub.subscribe(generation_id, position, head, quiet_since=quiet)
    assert (await take(hub, follower))[-1] == last_seq
    assert hub.reads == 1


async def test_a_wake_up_for_events_already_read_costs_nothing(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    follower = hub.subscribe(generation_id)
    first = await append(pool, generation_id, delta(1))
    second = await append(pool, generation_id, delta(2))
    hub.wake(generation_id, first)
    assert await take(hub, follower) == [1, 2, 3]
    reads, version = hub.reads, follower.edge.version
    follower.clear()  # the read that brought 2 and 3 in set it: it wakes everyone

    hub.wake(generation_id, second)  # the second append's notification, arriving late

    assert follower.edge.version == version
    assert await follower.wait(0.01) is False
    assert await take(hub, follower) == []
    assert hub.reads == reads


async def test_a_page_is_heard_of_when_the_notification_of_its_oldest_event_arrived(
    pool: Pool,
) -> None:
    """``heard_at``: where the stream path's own share of a delivery starts (the commit's
    notification), for each page at the live edge; none for history nobody announced."""
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    follower = hub.subscribe(generation_id)
    history = await hub.page_after(follower, follower.edge.version)
    assert [event.seq for event in history] == [1]
    assert hub.heard_at(generation_id, history) is None, "seq 1 was never announced here"
    follower.position = 1

    # Every append first, then their three notifications with no await between them: the
    # shared read the first starts runs only once the page is asked for, so it brings all
    # three events (an await between notifications lets it land with seq 2 alone).
    seqs = [await append(pool, generation_id, delta(n)) for n in range(3)]
    heard = []
    for last_seq in seqs:
        before = time.time()
        hub.wake(generation_id, last_seq)
        heard.append((before, time.time()))
    page = await hub.page_after(follower, follower.edge.version)

    assert [event.seq for event in page] == [2, 3, 4]
    at = hub.heard_at(generation_id, page)
    assert at is not None
    assert heard[0][0] <= at <= heard[0][1], "the oldest event's notification, not a later one"
    later = hub.heard_at(generation_id, page[1:])
    assert later is not None
    assert heard[1][0] <= later <= heard[1][1]
    assert hub.heard_at(generation_id, history) is None, "an older page is no later one's"
    assert hub.heard_at(uuid4(), page) is None


async def test_what_was_heard_is_forgotten_with_the_events_it_announced(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    follower = hub.subscribe(generation_id)
    for n in range(20):
        last_seq = await append(pool, generation_id, delta(n))
        hub.wake(generation_id, last_seq)
        assert await take(hub, follower)
    assert len(follower.edge.heard) <= 2
    assert all(seq > (follower.edge.base or 0) for seq, _ in follower.edge.heard)


async def test_a_wake_up_that_lands_during_a_shared_read_makes_the_next_read_happen(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    follower = hub.subscribe(generation_id)
    assert await take(hub, follower) == [1]
    follower.clear()
    version = follower.edge.version
    reading = asyncio.ensure_future(hub.page_after(follower, version))
    last_seq = await append(pool, generation_id, delta(1))
    hub.wake(generation_id, last_seq)  # may land before or after the read started
    page = await reading
    follower.position = page[-1].seq if page else follower.position
    assert await follower.wait(1) is True  # either way the flag says: look again
    seen = [event.seq for event in page] + await take(hub, follower)
    assert seen == [2]


async def test_a_follower_far_behind_the_edge_reads_its_own_pages_and_catches_up(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    await append(pool, generation_id, *(delta(i) for i in range(20)))  # seqs 1..21
    hub = Hub(pool, page_size=5, cache_max=5)
    live = hub.subscribe(generation_id, 21)
    assert await take(hub, live) == []
    behind = hub.subscribe(generation_id, 0)
    own_pages, own_events = metrics.CATCHUP_PAGES.value(), metrics.CATCHUP_EVENTS.value()
    shared = metrics.EDGE_READS.value()

    pages = [await take(hub, behind) for _ in range(5)]
    assert metrics.CATCHUP_PAGES.value() - own_pages == 5  # all behind the edge (at 21)
    assert metrics.CATCHUP_EVENTS.value() - own_events == 21
    assert metrics.EDGE_READS.value() == shared

    assert pages == [
        [1, 2, 3, 4, 5],
        [6, 7, 8, 9, 10],
        [11, 12, 13, 14, 15],
        [16, 17, 18, 19, 20],
        [21],
    ]
    assert await take(hub, behind) == []
    last_seq = await append(pool, generation_id, delta(99))
    hub.wake(generation_id, last_seq)
    assert await take(hub, behind) == [22]
    assert await take(hub, live) == [22]


async def test_a_follower_ahead_of_the_edge_moves_it_and_wakes_the_followers_left_behind(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    waiting = hub.subscribe(generation_id)
    assert await take(hub, waiting) == [1]  # the edge is at 1 and fresh
    last_seq = await append(pool, generation_id, delta(1), delta(2))
    ahead = hub.subscribe(generation_id, last_seq)  # resumed from seq 3, which it already had

    assert await take(hub, ahead) == []
    assert await waiting.wait(1) is True
    hub.wake(generation_id, last_seq)  # the notification, late: dropped, 3 is at the edge
    assert await take(hub, waiting) == [2, 3]


async def test_the_edge_keeps_only_what_a_follower_at_it_has_not_been_given(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    follower = hub.subscribe(generation_id)
    for n in range(10):
        last_seq = await append(pool, generation_id, delta(n))
        hub.wake(generation_id, last_seq)
        assert await take(hub, follower) == ([1, 2] if n == 0 else [n + 2])
    assert len(follower.edge.events) <= 1


async def test_the_edge_is_capped_even_when_a_follower_stalls(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool, page_size=3, cache_max=6)
    stalled, reader = hub.subscribe(generation_id), hub.subscribe(generation_id)
    seen: list[int] = []
    for n in range(12):
        last_seq = await append(pool, generation_id, delta(n))
        hub.wake(generation_id, last_seq)
        while page := await take(hub, reader):
            seen += page
    assert seen == list(range(1, 14))
    assert len(reader.edge.events) <= 6
    caught_up: list[int] = []
    while page := await take(hub, stalled):
        caught_up += page
    assert caught_up == list(range(1, 14))  # from its own reads, then the edge


async def test_a_follower_going_away_does_not_cancel_the_read_the_others_wait_for(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    leaving, staying = hub.subscribe(generation_id), hub.subscribe(generation_id)
    first = asyncio.ensure_future(hub.page_after(leaving, 0))
    second = asyncio.ensure_future(hub.page_after(staying, 0))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    page = await asyncio.wait_for(second, 5)
    assert [event.seq for event in page] == [1]
    assert isinstance(page[0], StoredEvent)


class SlowHub(Hub):
    """Reads take 50 ms, so that notifications land while a shared read is in flight."""

    async def _read(self, generation_id: UUID, after: int) -> list[StoredEvent]:
        await asyncio.sleep(0.05)
        return await super()._read(generation_id, after)


async def test_followers_keep_receiving_through_a_burst_of_wake_ups_during_reads(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    hub = SlowHub(pool)
    follower = hub.subscribe(generation_id)
    assert await take(hub, follower) == [1]

    async def burst() -> None:
        for n in range(40):  # 0.8 s of appends, each announced, faster than a read
            hub.wake(generation_id, await append(pool, generation_id, delta(n)))
            await asyncio.sleep(0.02)

    appending = asyncio.ensure_future(burst())
    seen: list[int] = []
    loop = asyncio.get_running_loop()
    halfway = loop.time() + 0.5
    while loop.time() < halfway:
        if await follower.wait(0.1):
            seen += await take(hub, follower)
    assert not appending.done()
    assert len(seen) >= 10  # not parked until the burst ends
    await appending
    while page := await take(hub, follower):
        seen += page
    assert seen == list(range(2, 42))


class FailingHub(Hub):
    """PostgreSQL is down: every read fails, and we count the attempts."""

    attempts = 0

    async def _read(self, generation_id: UUID, after: int) -> list[StoredEvent]:
        self.attempts += 1
        raise StoreUnavailable("PostgreSQL is unavailable: connection refused")


async def test_a_follower_backs_off_while_reads_fail(pool: Pool) -> None:
    hub = FailingHub(pool)
    stream = follow(Streams(hub, keepalive_s=30), uuid4(), 0)
    assert isinstance(stream, AsyncGenerator)
    items: list[object] = []

    async def consume() -> None:
        async for item in stream:
            items.append(item)

    consuming = asyncio.ensure_future(consume())
    await asyncio.sleep(1.0)
    consuming.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consuming
    await stream.aclose()
    # Backoff 0.1, 0.2, 0.4 s... : a handful of tries in a second, never a busy loop.
    assert 2 <= hub.attempts <= 6
    assert all(item is KEEPALIVE for item in items)


# --- the check for lost wake-ups --------------------------------------------------------------


async def test_check_wakes_an_edge_whose_wake_up_was_lost_and_only_that_one(pool: Pool) -> None:
    lost, heard = await new_generation(pool), await new_generation(pool)
    hub = Hub(pool)
    lost_follower, heard_follower = hub.subscribe(lost), hub.subscribe(heard)
    assert await take(hub, lost_follower) == [1]
    assert await take(hub, heard_follower) == [1]
    assert await hub.check() == 0

    await append(pool, lost, delta(1))  # its notification never arrives
    hub.wake(heard, await append(pool, heard, delta(1)))
    assert await take(hub, heard_follower) == [2]
    heard_follower.clear()  # set by the read that brought 2 in

    lost_wakeups = metrics.LOST_WAKEUPS.value()
    assert await hub.check() == 1
    assert metrics.LOST_WAKEUPS.value() - lost_wakeups == 1
    assert await lost_follower.wait(0.01) is True
    assert await heard_follower.wait(0.01) is False
    assert await take(hub, lost_follower) == [2]
    assert await hub.check() == 0


async def test_check_covers_every_followed_generation_a_chunk_at_a_time(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "CHECK_CHUNK", 2)
    generation_ids = [await new_generation(pool) for _ in range(5)]
    hub = Hub(pool)
    followers = [hub.subscribe(generation_id) for generation_id in generation_ids]
    for follower in followers:
        assert await take(hub, follower) == [1]
    for generation_id in generation_ids[1:4]:  # three lost wake-ups, across two chunks
        await append(pool, generation_id, delta(1))

    assert await hub.check() == 3

    assert [await take(hub, follower) for follower in followers] == [[], [2], [2], [2], []]


async def test_the_check_runs_by_itself_once_started(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    follower = hub.subscribe(generation_id)
    assert await take(hub, follower) == [1]
    follower.clear()
    await append(pool, generation_id, delta(1))  # no wake-up
    hub.start_checking(0.05)
    try:
        assert await follower.wait(5) is True
        assert await take(hub, follower) == [2]
    finally:
        await hub.stop()


async def test_check_with_nobody_following_asks_nothing(pool: Pool) -> None:
    assert await Hub(pool).check() == 0
