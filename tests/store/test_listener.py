from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from service.observe import metrics
from service.store.db import Pool
from service.store.listener import Listener
from tests.helpers import wait_until

CHANNEL = "test_channel"


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
    await wait_until(condition, "the condition", seconds)


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
    reconnects, unreachable = metrics.LISTENER_RECONNECTS.value(), metrics.DB_UNREACHABLE.value()
    assert metrics.DB_UP.value() == 1

    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)

    await until(lambda: listener.connections_made == 2)
    await asyncio.wait_for(listener.connected.wait(), 10)
    assert recorder.connects == 2
    assert metrics.LISTENER_RECONNECTS.value() - reconnects == 1
    assert metrics.DB_UNREACHABLE.value() > unreachable  # the outage, in seconds
    assert metrics.DB_UP.value() == 1
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
