"""One LISTEN connection per process, and the in-process hub that fans its wake-ups out.

A notification is only a wake-up: whoever is woken re-reads the table after the last seq it
has, so nothing depends on a notification arriving. Wake-ups are level-triggered flags (an
``asyncio.Event`` per subscriber), not queues: a slow stream never makes the hub wait or
buffer, it just finds its flag set and reads everything it missed in one page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from functools import partial
from uuid import UUID

import asyncpg

from service.store.db import UNAVAILABLE_ERRORS, asyncpg_dsn

log = logging.getLogger(__name__)


class Subscription:
    """One stream's interest in one generation."""

    __slots__ = ("_flag", "closed", "generation_id")

    def __init__(self, generation_id: UUID) -> None:
        self.generation_id = generation_id
        self._flag = asyncio.Event()
        self.closed = False

    def wake(self) -> None:
        self._flag.set()

    def clear(self) -> None:
        self._flag.clear()

    async def wait(self, seconds: float) -> bool:
        """Wait for a wake-up; False when ``seconds`` passed without one."""
        try:
            async with asyncio.timeout(seconds):
                await self._flag.wait()
        except TimeoutError:
            return False
        return True


class Hub:
    """Subscriptions keyed by generation id; costs nothing for generations nobody follows."""

    def __init__(self) -> None:
        self._subscriptions: dict[UUID, set[Subscription]] = {}
        self.closing = False

    def subscribe(self, generation_id: UUID) -> Subscription:
        subscription = Subscription(generation_id)
        subscription.closed = self.closing
        self._subscriptions.setdefault(generation_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscriptions.get(subscription.generation_id)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscriptions[subscription.generation_id]

    def wake(self, generation_id: UUID) -> None:
        for subscription in self._subscriptions.get(generation_id, ()):
            subscription.wake()

    def wake_all(self) -> None:
        for subscribers in self._subscriptions.values():
            for subscription in subscribers:
                subscription.wake()

    def close(self) -> None:
        """Shutting down: every stream ends after its current page; new ones end at once."""
        self.closing = True
        for subscribers in self._subscriptions.values():
            for subscription in subscribers:
                subscription.closed = True
        self.wake_all()

    def __len__(self) -> int:
        return sum(len(subscribers) for subscribers in self._subscriptions.values())


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

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="genstream-listener")

    async def stop(self) -> None:
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
                log.exception("notification handler for %s failed on %r", channel, payload)

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
                self.connections_made += 1
                self.connected.set()
                self._on_connect()
                delay = 0.05
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._health_check_s)
                    if not lost.is_set():
                        # A half-open TCP connection never says it died: ask.
                        await conn.fetchval("SELECT 1", timeout=self._health_check_s)
                log.warning("LISTEN connection lost; reconnecting")
            except UNAVAILABLE_ERRORS as exc:
                log.warning("LISTEN connection failed (%s); retrying in %.2fs", exc, delay)
            finally:
                self.connected.clear()
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self._reconnect_max_s)


def _set_event(event: asyncio.Event, _conn: object) -> None:
    event.set()


def parse_event_payload(payload: str) -> UUID | None:
    """``<generation id>:<last seq>`` -> the generation id (None for anything malformed)."""
    generation_id, _, _ = payload.partition(":")
    try:
        return UUID(generation_id)
    except ValueError:
        return None
