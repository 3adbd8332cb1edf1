from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from uuid import UUID, uuid4

import pytest

from service.errors import InvalidRequest
from service.events import EventType, NewEvent, Status
from service.generation import runs
from service.store.db import Pool, create_pool
from service.store.event_log import Head, StoredEvent
from service.streams.follow import (
    KEEPALIVE,
    Keepalive,
    Streams,
    follow,
    has_events_after,
    head,
    once_available,
)
from service.streams.hub import Hub, Subscription
from tests.conftest import free_socket
from tests.helpers import DONE, append, delta, new_generation, wait_until

Item = StoredEvent | Keepalive
LONG = 30.0  # a keepalive interval no test should ever reach


async def open_follow(
    hub: Hub, generation_id: UUID, after: int, *, keepalive_s: float
) -> AsyncGenerator[Item, None]:
    """``follow`` flattened to one item per event (it yields pages)."""
    pages = follow(Streams(hub, keepalive_s), generation_id, after)
    assert isinstance(pages, AsyncGenerator)
    async with contextlib.aclosing(pages):
        async for page in pages:
            if isinstance(page, Keepalive):
                yield page
            else:
                for event in page:
                    yield event


async def collect(stream: AsyncGenerator[Item, None], seconds: float = 5.0) -> list[Item]:
    items: list[Item] = []
    try:
        async with asyncio.timeout(seconds):
            async for item in stream:
                items.append(item)
    finally:
        await stream.aclose()
    return items


async def next_event(stream: AsyncGenerator[Item, None], seconds: float = 5.0) -> StoredEvent:
    """The next stored event, skipping keepalives."""
    async with asyncio.timeout(seconds):
        while True:
            item = await anext(stream)
            if isinstance(item, StoredEvent):
                return item


def seqs(items: list[Item]) -> list[int]:
    return [item.seq for item in items if isinstance(item, StoredEvent)]


async def test_follow_replays_stored_events_after_the_resume_point_then_ends_at_terminal(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    await append(pool, generation_id, *(delta(i) for i in range(5)), DONE)
    hub = Hub(pool)

    items = await collect(open_follow(hub, generation_id, 3, keepalive_s=LONG))

    assert seqs(items) == [4, 5, 6, 7]
    assert all(isinstance(item, StoredEvent) for item in items)
    last = items[-1]
    assert isinstance(last, StoredEvent)
    assert last.type == EventType.SUCCEEDED
    body = json.loads(last.json)
    assert body["generation_id"] == str(generation_id)
    assert body["seq"] == 7
    assert len(hub) == 0


async def test_follow_from_zero_replays_everything_in_order(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    await append(pool, generation_id, delta(1), DONE)

    items = await collect(open_follow(Hub(pool, page_size=100), generation_id, 0, keepalive_s=LONG))

    assert [(e.seq, e.type) for e in items if isinstance(e, StoredEvent)] == [
        (1, EventType.QUEUED),
        (2, EventType.LLM_DELTA),
        (3, EventType.SUCCEEDED),
    ]


async def test_follow_pages_through_more_events_than_a_page_without_waiting(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    await append(pool, generation_id, *(delta(i) for i in range(20)), DONE)

    # A full page must be followed by another read at once, not by a wait for a wake-up
    # (which would take the keepalive interval, far beyond the timeout).
    items = await collect(
        open_follow(Hub(pool, page_size=3), generation_id, 0, keepalive_s=LONG), seconds=5
    )

    assert seqs(items) == list(range(1, 23))
    assert all(isinstance(item, StoredEvent) for item in items)


async def test_follow_pages_exactly_when_the_log_is_a_multiple_of_the_page_size(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    await append(pool, generation_id, delta(1), delta(2), delta(3), delta(4), DONE)  # 6 events

    items = await collect(open_follow(Hub(pool, page_size=3), generation_id, 0, keepalive_s=LONG))

    assert seqs(items) == [1, 2, 3, 4, 5, 6]


async def test_follow_yields_keepalive_while_idle(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    stream = open_follow(hub, generation_id, 0, keepalive_s=0.05)
    try:
        async with asyncio.timeout(5):
            first = await anext(stream)
            assert isinstance(first, StoredEvent)
            assert first.seq == 1
            assert await anext(stream) is KEEPALIVE
            assert await anext(stream) is KEEPALIVE
    finally:
        await stream.aclose()


def subscription_of(hub: Hub, generation_id: UUID) -> Subscription:
    (subscription,) = hub._edges[generation_id].subscribers
    return subscription


async def idle(hub: Hub, generation_id: UUID, *, reads_at_least: int = 0) -> None:
    """Until the one stream on ``generation_id`` waits for a wake-up, with nothing to send,
    after the hub's ``reads_at_least``-th read of the log."""
    subscription = subscription_of(hub, generation_id)
    await wait_until(
        lambda: subscription.waiting and hub.reads >= reads_at_least, "the stream waits"
    )


async def test_follow_sends_live_events_once_woken_and_ends_after_the_terminal_one(
    pool: Pool,
) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    stream = open_follow(hub, generation_id, 0, keepalive_s=LONG)
    try:
        assert (await next_event(stream)).seq == 1

        pending = asyncio.ensure_future(next_event(stream))
        await idle(hub, generation_id)
        assert not pending.done()
        reads = hub.reads
        hub.wake(generation_id)  # a spurious wake-up: the log is read, nothing is sent
        await idle(hub, generation_id, reads_at_least=reads + 1)
        assert not pending.done()

        await append(pool, generation_id, delta(1), delta(2))
        reads = hub.reads
        hub.wake(uuid4())  # someone else's wake-up does not concern us: nothing is read
        assert hub.reads == reads
        assert subscription_of(hub, generation_id).waiting
        assert not pending.done()
        hub.wake(generation_id)
        assert (await asyncio.wait_for(pending, 5)).seq == 2
        assert (await next_event(stream)).seq == 3

        await append(pool, generation_id, DONE)
        hub.wake(generation_id)
        terminal = await next_event(stream)
        assert (terminal.seq, terminal.type) == (4, EventType.SUCCEEDED)
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(stream), 5)
    finally:
        await stream.aclose()
    assert len(hub) == 0


async def test_an_event_appended_and_woken_between_two_reads_is_not_missed(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    await append(pool, generation_id, delta(1))
    hub = Hub(pool)
    stream = open_follow(hub, generation_id, 0, keepalive_s=LONG)
    try:
        assert (await next_event(stream)).seq == 1
        # The stream is now past its read of seqs 1..2 and suspended handing them out; the
        # append and its wake-up land before it gets to wait. The wake must not be lost.
        await append(pool, generation_id, delta(2))
        hub.wake(generation_id)
        assert (await next_event(stream)).seq == 2
        assert (await next_event(stream)).seq == 3
    finally:
        await stream.aclose()


async def test_an_event_appended_before_following_starts_needs_no_wake(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    stream = open_follow(hub, generation_id, 1, keepalive_s=LONG)
    try:
        await append(pool, generation_id, delta(1))  # no wake-up at all
        assert (await next_event(stream)).seq == 2
    finally:
        await stream.aclose()


async def test_follow_ends_when_the_hub_closes(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    stream = open_follow(hub, generation_id, 0, keepalive_s=LONG)
    try:
        assert (await next_event(stream)).seq == 1
        pending = asyncio.ensure_future(anext(stream))
        await idle(hub, generation_id)
        hub.end_streams()
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(pending, 5)
    finally:
        await stream.aclose()
    assert len(hub) == 0


async def test_follow_started_after_the_hub_closed_ends_at_once(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    hub.end_streams()
    items = await collect(open_follow(hub, generation_id, 0, keepalive_s=LONG))
    assert items == []
    assert len(hub) == 0


async def test_the_subscription_is_removed_when_the_consumer_stops(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    stream = open_follow(hub, generation_id, 0, keepalive_s=LONG)
    await next_event(stream)
    assert len(hub) == 1
    await stream.aclose()
    assert len(hub) == 0


async def test_the_subscription_is_removed_when_the_consumer_is_cancelled(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    hub = Hub(pool)
    stream = open_follow(hub, generation_id, 0, keepalive_s=LONG)
    try:
        await next_event(stream)
        waiting = asyncio.ensure_future(anext(stream))
        await idle(hub, generation_id)
        assert len(hub) == 1
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        await stream.aclose()
    assert len(hub) == 0


async def test_follow_of_an_unknown_generation_yields_only_keepalives(pool: Pool) -> None:
    hub = Hub(pool)
    stream = open_follow(hub, uuid4(), 0, keepalive_s=0.05)
    try:
        assert await asyncio.wait_for(anext(stream), 5) is KEEPALIVE
    finally:
        await stream.aclose()


def test_resume_point_at_or_after_the_terminal_event_has_nothing_left() -> None:
    finished = Head(Status.SUCCEEDED, 5)
    assert has_events_after(finished, 5) is False
    assert has_events_after(finished, 9) is False
    assert has_events_after(finished, 4) is True
    assert has_events_after(finished, 0) is True
    for status in (Status.FAILED, Status.CANCELLED):
        assert has_events_after(Head(status, 3), 3) is False


def test_resume_point_within_a_running_generation_has_more_to_come() -> None:
    running = Head(Status.RUNNING, 5)
    assert has_events_after(running, 0) is True
    assert has_events_after(running, 5) is True
    assert has_events_after(Head(Status.QUEUED, 1), 1) is True


def test_resume_point_beyond_the_last_event_of_a_running_generation_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="cannot resume after seq 6"):
        has_events_after(Head(Status.RUNNING, 5), 6)


@pytest.mark.parametrize("status", [Status.RUNNING, Status.SUCCEEDED])
def test_a_negative_resume_point_is_invalid(status: Status) -> None:
    with pytest.raises(InvalidRequest, match="non-negative"):
        has_events_after(Head(status, 5), -1)


def closed_port() -> int:
    """A port nothing listens on: bound, then closed."""
    sock = free_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


async def test_a_read_for_a_stream_opened_in_an_outage_waits_with_keepalives(
    pool: Pool,
) -> None:
    """No database behind the pool (a port nobody listens on): keepalives after each failed
    read, backing off, until the process shuts down; the same pool answering gives the head."""
    generation_id = await new_generation(pool)
    dead = await create_pool(f"postgresql://nobody@127.0.0.1:{closed_port()}/x", min_size=0)
    try:
        hub = Hub(dead)
        waiting = once_available(Streams(hub, 15.0), lambda: head(dead, generation_id))
        started = asyncio.get_running_loop().time()
        first = [await anext(waiting) for _ in range(3)]
        elapsed = asyncio.get_running_loop().time() - started
        hub.end_streams()
        rest = [item async for item in waiting]
    finally:
        await dead.close()
    assert first == [KEEPALIVE] * 3
    assert 0.6 <= elapsed < 5  # 0.1 + 0.2 + 0.4 s of backoff
    assert rest in ([], [KEEPALIVE])  # ends once the process shuts down

    alive = once_available(Streams(Hub(pool), 15.0), lambda: head(pool, generation_id))
    (found,) = [item async for item in alive]
    assert isinstance(found, Head)
    assert (found.status, found.last_seq) == (Status.QUEUED, 1)


async def test_follow_goes_on_past_a_terminal_event_that_ends_a_page_but_not_the_log(
    pool: Pool,
) -> None:
    """A retried run: its first attempt's terminal event ends a page (of 3); the log goes on
    through generation.retried, and so does the follow, to the log's last terminal event."""
    generation_id = await new_generation(pool)
    failed = NewEvent(EventType.FAILED, "core", 0.2, "Failed", {"error": "e"})
    await append(pool, generation_id, delta(1), failed)
    await runs.retry_generation(pool, "alice", generation_id)
    await append(pool, generation_id, delta(2), DONE)
    hub = Hub(pool, page_size=3)

    items = await collect(open_follow(hub, generation_id, 0, keepalive_s=LONG))

    assert seqs(items) == [1, 2, 3, 4, 5, 6]
