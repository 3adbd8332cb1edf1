from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from uuid import uuid4

import pytest

from service.store.db import Pool
from service.store.listener import Hub, Listener, parse_event_payload

CHANNEL = "test_channel"


# --- Hub --------------------------------------------------------------------------------------


async def test_a_woken_subscription_returns_true_from_wait() -> None:
    hub = Hub()
    generation_id = uuid4()
    subscription = hub.subscribe(generation_id)
    hub.wake(generation_id)
    assert await subscription.wait(5) is True


async def test_wait_returns_false_after_the_timeout_without_a_wake() -> None:
    hub = Hub()
    subscription = hub.subscribe(uuid4())
    assert await subscription.wait(0.05) is False


async def test_a_wake_while_waiting_ends_the_wait() -> None:
    hub = Hub()
    generation_id = uuid4()
    subscription = hub.subscribe(generation_id)
    waiting = asyncio.ensure_future(subscription.wait(5))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    hub.wake(generation_id)
    assert await asyncio.wait_for(waiting, 5) is True


async def test_wake_reaches_only_that_generations_subscriptions() -> None:
    hub = Hub()
    first, other = uuid4(), uuid4()
    a, b = hub.subscribe(first), hub.subscribe(first)
    c = hub.subscribe(other)
    hub.wake(first)
    assert await a.wait(1) is True
    assert await b.wait(1) is True
    assert await c.wait(0.05) is False


async def test_a_wake_stays_set_until_cleared() -> None:
    hub = Hub()
    generation_id = uuid4()
    subscription = hub.subscribe(generation_id)
    hub.wake(generation_id)
    assert await subscription.wait(1) is True
    assert await subscription.wait(1) is True  # level-triggered: still set
    subscription.clear()
    assert await subscription.wait(0.05) is False


async def test_wake_all_wakes_every_subscription() -> None:
    hub = Hub()
    subscriptions = [hub.subscribe(uuid4()) for _ in range(3)] + [hub.subscribe(uuid4())]
    hub.wake_all()
    for subscription in subscriptions:
        assert await subscription.wait(1) is True


def test_wake_of_a_generation_nobody_follows_is_harmless() -> None:
    hub = Hub()
    hub.wake(uuid4())
    hub.wake_all()
    assert len(hub) == 0


def test_unsubscribing_the_last_subscription_removes_the_generation() -> None:
    hub = Hub()
    generation_id = uuid4()
    a, b = hub.subscribe(generation_id), hub.subscribe(generation_id)
    assert len(hub) == 2
    hub.unsubscribe(a)
    assert len(hub) == 1
    assert generation_id in hub._subscriptions
    hub.unsubscribe(b)
    assert len(hub) == 0
    assert generation_id not in hub._subscriptions
    hub.unsubscribe(b)  # twice is harmless
    assert len(hub) == 0


async def test_an_unsubscribed_subscription_is_no_longer_woken() -> None:
    hub = Hub()
    generation_id = uuid4()
    subscription = hub.subscribe(generation_id)
    hub.unsubscribe(subscription)
    hub.wake(generation_id)
    assert await subscription.wait(0.05) is False


async def test_close_marks_existing_and_future_subscriptions_closed_and_wakes_them() -> None:
    hub = Hub()
    existing = hub.subscribe(uuid4())
    assert not existing.closed
    hub.close()
    assert existing.closed
    assert await existing.wait(1) is True
    later = hub.subscribe(uuid4())
    assert later.closed


# --- parse_event_payload ----------------------------------------------------------------------


def test_parse_event_payload_takes_the_generation_id() -> None:
    generation_id = uuid4()
    assert parse_event_payload(f"{generation_id}:42") == generation_id
    assert parse_event_payload(f"{generation_id}:1") == generation_id


@pytest.mark.parametrize("payload", ["", ":", ":3", "garbage", "not-a-uuid:3", "12345:6", "\x00"])
def test_parse_event_payload_rejects_garbage(payload: str) -> None:
    assert parse_event_payload(payload) is None


# --- Listener against the real database -------------------------------------------------------


@dataclass
class Recorder:
    payloads: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    connects: int = 0

    def on_payload(self, payload: str) -> None:
        self.payloads.put_nowait(payload)

    def on_connect(self) -> None:
        self.connects += 1


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def listener(database_url: str, recorder: Recorder) -> AsyncIterator[Listener]:
    listener = Listener(
        database_url, {CHANNEL: recorder.on_payload}, recorder.on_connect, reconnect_max_s=0.2
    )
    listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        yield listener
    finally:
        await asyncio.wait_for(listener.stop(), 10)


async def notify(pool: Pool, payload: str, channel: str = CHANNEL) -> None:
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_notify($1, $2)", channel, payload)


async def listen_backends(pool: Pool) -> list[int]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            """
            SELECT pid FROM pg_stat_activity
            WHERE datname = current_database()
              AND pid <> pg_backend_pid()
              AND query LIKE 'LISTEN%'
            """
        )
    return [row["pid"] for row in rows]


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_notify_on_a_channel_reaches_its_handler(
    pool: Pool, listener: Listener, recorder: Recorder
) -> None:
    await notify(pool, "other channel, not ours", channel="elsewhere")
    await notify(pool, "hello")
    assert await asyncio.wait_for(recorder.payloads.get(), 5) == "hello"
    assert recorder.payloads.empty()


async def test_on_connect_is_called_on_the_first_connect(
    listener: Listener, recorder: Recorder
) -> None:
    assert listener.connections_made == 1
    assert recorder.connects == 1


async def test_a_failing_handler_does_not_stop_the_listener(
    pool: Pool, database_url: str, recorder: Recorder
) -> None:
    def broken(_payload: str) -> None:
        raise RuntimeError("handler bug")

    listener = Listener(
        database_url, {"broken": broken, CHANNEL: recorder.on_payload}, recorder.on_connect
    )
    listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        await notify(pool, "boom", channel="broken")
        await notify(pool, "still here")
        assert await asyncio.wait_for(recorder.payloads.get(), 5) == "still here"
        assert listener.connections_made == 1
    finally:
        await asyncio.wait_for(listener.stop(), 10)


async def test_the_listener_reconnects_by_itself_after_its_backend_is_terminated(
    pool: Pool, listener: Listener, recorder: Recorder
) -> None:
    await notify(pool, "before")
    assert await asyncio.wait_for(recorder.payloads.get(), 5) == "before"
    [pid] = await listen_backends(pool)

    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)

    await until(lambda: listener.connections_made == 2)
    await asyncio.wait_for(listener.connected.wait(), 10)
    assert recorder.connects == 2
    new_backends = await listen_backends(pool)
    assert len(new_backends) == 1
    assert new_backends != [pid]

    await notify(pool, "after")
    assert await asyncio.wait_for(recorder.payloads.get(), 5) == "after"


async def test_stop_ends_the_listener_and_its_connection(
    pool: Pool, database_url: str, recorder: Recorder
) -> None:
    listener = Listener(database_url, {CHANNEL: recorder.on_payload}, recorder.on_connect)
    listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 10)
        assert len(await listen_backends(pool)) == 1
    finally:
        await asyncio.wait_for(listener.stop(), 10)

    assert not listener.connected.is_set()
    async with asyncio.timeout(10):
        while await listen_backends(pool):
            await asyncio.sleep(0.05)
    await notify(pool, "nobody listens")
    await asyncio.sleep(0.2)
    assert recorder.payloads.empty()
    assert listener.connections_made == 1
