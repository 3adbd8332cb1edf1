"""One LISTEN connection per process, shared by everything in it that waits for the database.

Its handlers only wake things up (``service.streams.hub``, the worker); nothing depends on a
notification arriving, which is why a reconnect just calls ``on_connect`` to wake everyone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping
from functools import partial

import asyncpg

from service.observe import metrics
from service.observe.logs import get_logger
from service.store.db import UNAVAILABLE_ERRORS, asyncpg_dsn

log = get_logger(__name__)


class Listener:
    """Holds the LISTEN connection: reconnects with backoff, and after every (re)connect calls
    ``on_connect`` so that everyone re-reads what may have been missed while it was down."""

    def __init__(
        self,
        url: str,
        handlers: Mapping[str, Callable[[str], None]],
        on_connect: Callable[[], None],
        *,
        reconnect_max_s: float = 5.0,
        health_check_s: float = 10.0,
    ) -> None:
        self._dsn = asyncpg_dsn(url)
        self._handlers = dict(handlers)
        self._on_connect = on_connect
        self._reconnect_max_s = reconnect_max_s
        self._health_check_s = health_check_s
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.connections_made = 0
        self._lost_at: float | None = None  # when the connection was last lost (monotonic)

    def _connected_again(self) -> None:
        if self.connections_made and self._lost_at is not None:
            outage_s = time.monotonic() - self._lost_at
            metrics.LISTENER_RECONNECTS.inc()
            metrics.DB_UNREACHABLE.inc(outage_s)
            log.info("listener.reconnected", outage_s=round(outage_s, 3))
        self._lost_at = None
        self.connections_made += 1
        self.connected.set()

    def start(self) -> None:
        metrics.DB_UP.read_from(self, lambda: [((), 1.0 if self.connected.is_set() else 0.0)])
        self._task = asyncio.create_task(self._run(), name="genstream-listener")

    async def stop(self) -> None:
        metrics.DB_UP.forget(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _dispatch(self, _conn: object, _pid: int, channel: str, payload: object) -> None:
        handler = self._handlers.get(channel)
        if handler is not None:
            try:
                handler(str(payload))
            except Exception:
                log.exception("listener.handler_failed", channel=channel, payload=str(payload))

    async def _run(self) -> None:
        delay = 0.05
        while True:
            conn: asyncpg.Connection[asyncpg.Record] | None = None
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
                lost = asyncio.Event()
                conn.add_termination_listener(partial(_set_event, lost))
                for channel in self._handlers:
                    await conn.add_listener(channel, self._dispatch)
                self._connected_again()
                self._on_connect()
                delay = 0.05
                while not lost.is_set():
                    # Not asyncio.wait_for: on Python 3.11 it can drop the cancel of stop()
                    # that lands as the wait ends (CPython gh-86296).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._health_check_s):
                            await lost.wait()
                    if not lost.is_set():
                        # A half-open TCP connection never says it died: ask.
                        await conn.fetchval("SELECT 1", timeout=self._health_check_s)
                log.warning("listener.lost", reconnecting=True)
            except UNAVAILABLE_ERRORS as exc:
                log.warning("listener.failed", error=str(exc), retry_in_s=round(delay, 2))
            finally:
                if self.connected.is_set() or self._lost_at is None:
                    self._lost_at = time.monotonic()
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._reconnect_max_s)


def _set_event(event: asyncio.Event, _conn: object) -> None:
    event.set()
