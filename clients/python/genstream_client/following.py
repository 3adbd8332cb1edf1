"""``follow``: one generation's events, live, each exactly once and in order, whatever breaks.

How it holds to that, step by step:

* The stream is opened with a stream token (``?token=``), never with the API key: a stream
  opened with a token while the server's database is away answers 200 and keepalives until
  it is back, where one opened with the key answers 503. The token comes from ``POST
  .../stream-token`` (with the key). A 401 on the stream (the token expired, or the server's
  secret changed) fetches a fresh one at once. A short-lived token can expire between its
  issue and its use, so a fresh one refused is tried again, up to ``TOKEN_REFUSALS_MAX`` in a
  row; then the 401 is raised. The key refused when asking for a token (revoked, expired) is
  raised at once.
* Every connection after the first event resumes with ``Last-Event-ID: <last seq yielded>``.
* Each event's seq is checked against the last one yielded: a repeat is dropped; a jump is
  filled from the events endpoint before the event is yielded (a seq the log cannot give
  is a ``ProtocolError``). So no seq is skipped or repeated, whatever the server sends.
* Every event yielded, streamed or filled, must follow the chain of those before it
  (``chain.py``): one that does not is a ``ChainBroken`` ("incomplete or altered"), raised at
  once, never retried. The terminal event's ``count`` and ``chain_hash`` must match what came.
* It ends after the terminal event, or on ``204`` (nothing after the resume point: finished).
* Between connections it waits the server's ``retry:`` hint (``DEFAULT_RETRY_S`` until one
  arrives), doubled for each failure in a row up to ``BACKOFF_CAP_S``, plus up to half again at
  random so that the clients of a restarted server do not come back at the same instant; a
  429 or 503 waits at least its ``Retry-After``. An event resets the count.
* Retried: connection failures, a stream silent for ``STREAM_READ_TIMEOUT_S`` (three times the
  contract's keepalive interval), a stream that ends before the terminal event, 429, 5xx.
  Raised: 400, 401 from the key, 403, 404 and every other 4xx; a malformed event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING

import httpx

from genstream_client.chain import ChainKeeper
from genstream_client.errors import (
    GenstreamError,
    ProtocolError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    error_of,
)
from genstream_client.models import Event
from genstream_client.sse import SSEParser

if TYPE_CHECKING:
    from genstream_client.client import AsyncGenstream

log = logging.getLogger("genstream_client")

DEFAULT_RETRY_S = 2.0
BACKOFF_CAP_S = 10.0
STREAM_READ_TIMEOUT_S = 45.0
TOKEN_REFUSALS_MAX = 3  # fresh tokens refused in a row before the 401 is believed


def reconnect_delay(
    retry_s: float,
    failures: int,
    retry_after: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before the next connection: the hint, doubled per failure in a row
    (capped, but never below the hint), jittered by up to half again; at least Retry-After."""
    backoff = max(retry_s, min(BACKOFF_CAP_S, retry_s * 2.0 ** min(failures, 16)))
    delay = backoff * (1 + rng() / 2)
    if retry_after is not None:
        delay = max(delay, retry_after * (1 + rng() / 10))
    return delay


class _Ended(Exception):
    """The stream answered 204: nothing after the resume point."""


class _TokenRefused(Exception):
    """The stream answered 401 to a token: fetch a fresh one and reconnect at once."""


class _Follower:
    def __init__(self, client: AsyncGenstream, generation_id: str, after: int) -> None:
        self.client = client
        self.generation_id = generation_id
        self.last = after
        self.retry_s = DEFAULT_RETRY_S
        self.failures = 0
        self.token: str | None = None
        self.refused_tokens = 0  # stream 401s in a row since the last 200
        self.chain = ChainKeeper(after)
        self.finished = False  # the log's last terminal event was yielded

    async def events(self) -> AsyncGenerator[Event, None]:
        while True:
            retry_after: float | None = None
            try:
                # aclosing: a consumer that stops early closes the connection now, not when
                # the garbage collector finds the generator holding it.
                async with contextlib.aclosing(self._connection()) as events:
                    async for event in events:
                        yield event
                if self.finished:  # the connection ended after the log's last event
                    return
                why = "the stream ended before the terminal event"
            except _Ended:
                return
            except _TokenRefused:
                continue
            except httpx.TransportError as exc:
                why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except (TooManyRequests, Unavailable) as exc:
                why, retry_after = str(exc), exc.retry_after
            except GenstreamError as exc:
                if exc.status is None or exc.status < 500:
                    raise
                why = str(exc)
            delay = reconnect_delay(self.retry_s, self.failures, retry_after)
            self.failures += 1
            log.warning(
                "genstream %s: %s; reconnecting after seq %d in %.1f s",
                self.generation_id,
                why,
                self.last,
                delay,
            )
            await asyncio.sleep(delay)

    async def _connection(self) -> AsyncGenerator[Event, None]:
        """One connection's events, checked and gap-filled; returns when the stream ends."""
        if self.token is None:
            self.token = await self.client.stream_token(self.generation_id)
        headers = {"Last-Event-ID": str(self.last)} if self.last else {}
        timeout = httpx.Timeout(self.client.http.timeout.connect, read=STREAM_READ_TIMEOUT_S)
        async with self.client.http.stream(
            "GET",
            self.client.url(f"/api/generations/{self.generation_id}/stream"),
            params={"token": self.token},
            headers=headers,
            timeout=timeout,
        ) as response:
            if response.status_code == 204:
                raise _Ended
            if response.status_code != 200:
                await response.aread()
                error = error_of(response)
                if isinstance(error, Unauthorized) and self.refused_tokens < TOKEN_REFUSALS_MAX:
                    log.info("genstream %s: %s; fetching a fresh token", self.generation_id, error)
                    self.token = None
                    self.refused_tokens += 1
                    raise _TokenRefused
                raise error
            self.refused_tokens = 0
            parser = SSEParser()
            async for chunk in response.aiter_bytes():
                for sse in parser.feed(chunk):
                    event = Event.from_json(sse.data)
                    if event.seq <= self.last:
                        continue  # a repeat
                    if event.seq > self.last + 1:
                        async with contextlib.aclosing(self._fill(event.seq)) as missing:
                            async for earlier in missing:
                                self.chain.check(earlier)
                                yield earlier
                                if earlier.is_terminal and await self._ends(earlier):
                                    return
                    self.chain.check(event)
                    self.last, self.failures = event.seq, 0
                    yield event
                    if event.is_terminal and await self._ends(event):
                        return
                if parser.retry is not None:
                    self.retry_s = parser.retry / 1000

    async def _ends(self, terminal: Event) -> bool:
        """Whether this terminal event is the log's last: a retried run's log goes on after
        one (``generation.retried``). Asked of the log, once per terminal event."""
        page = await self.client.events_page(self.generation_id, terminal.seq, 1)
        self.finished = not page.events
        return self.finished

    async def _fill(self, seq: int) -> AsyncGenerator[Event, None]:
        """The events between the last one yielded and ``seq``, from the events endpoint."""
        while self.last < seq - 1:
            page = await self.client.events_page(
                self.generation_id, self.last, min(1000, seq - 1 - self.last)
            )
            if not page.events or page.events[0].seq != self.last + 1:
                found = f"seq {page.events[0].seq}" if page.events else "nothing"
                raise ProtocolError(
                    f"the stream of {self.generation_id} skipped from seq {self.last} to "
                    f"{seq}, and its log cannot fill seq {self.last + 1} (it gives {found})"
                )
            for event in page.events:
                if event.seq != self.last + 1:
                    break  # the next page's request names what is missing
                self.last = event.seq
                yield event


def follow(client: AsyncGenstream, generation_id: str, after: int) -> AsyncGenerator[Event, None]:
    return _Follower(client, generation_id, after).events()
