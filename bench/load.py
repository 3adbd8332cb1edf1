"""Load shapes against an SSE server, and latency from publish start to client receipt.

A *target* is a running server plus a way to publish one event and the stream paths to follow.
Three implement it: genstream (publish = ``event_log.append`` through the worker's
``LogEmitter``), the in-memory ceiling, and the polling design. One client drives all three,
so their figures differ by the server only.

Shapes:

* ``spread``: S streams, each following its own generation (channel); R events/s in total,
  round-robin over the S generations, so every event is sent to exactly one stream.
* ``fanout``: S streams all following ONE generation; each event is sent S times.
* ``saturate``: S streams on one generation and publishers appending back to back (closed
  loop): event-sends/s received, and server CPU per send.
* ``throughput``: S streams, one generation each, publishers appending batches of B events
  back to back (closed loop), round-robin: durable events/s through append + stream, the
  way the generator's coalesced ``llm.delta`` batches arrive (genstream only).

Every event carries ``t`` (``time.time_ns()`` at the start of its publish/append: one clock for
all the processes on this machine) and ``i`` (its index). Latency = the client's
``time.time_ns()`` when the read holding the frame returned, minus ``t``. Events published in
the warm-up are excluded. After publishing, the client waits up to ``drain_s`` for the rest;
what has not arrived by then is reported as ``undelivered`` (late or lost, never hidden).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.core import Distribution
from bench.processes import ServerProcess, own_cpu_seconds
from bench.sse import FrameParser, RawSSEStream

OPEN_CONCURRENCY = 200
PUBLISH_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class Shape:
    kind: str  # spread | fanout | saturate | throughput
    streams: int
    rate: float  # events/s published; 0 for the closed loops (saturate, throughput)
    duration_s: float
    batch: int = 1  # events per publish

    @property
    def closed_loop(self) -> bool:
        return self.kind in ("saturate", "throughput")

    @property
    def channels(self) -> int:
        return self.streams if self.kind in ("spread", "throughput") else 1

    @property
    def fan(self) -> int:
        """How many streams receive each event."""
        return 1 if self.kind in ("spread", "throughput") else self.streams

    @property
    def label(self) -> str:
        streams = f"{self.streams:,} stream{'s' if self.streams != 1 else ''}"
        if self.kind == "saturate":
            return f"saturate, {streams} on 1 generation"
        if self.kind == "throughput":
            return f"throughput, {streams} (1 generation each), batches of {self.batch}"
        on = "1 generation" if self.kind == "fanout" else "1 generation each"
        return f"{self.kind}, {streams} ({on}) @ {self.rate:,.0f} ev/s"

    def as_json(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "streams": self.streams,
            "events_per_s": self.rate,
            "duration_s": self.duration_s,
            "batch": self.batch,
        }


class Target(Protocol):
    name: str
    server: ServerProcess

    async def stream_paths(self, shape: Shape) -> list[str]:
        """One path per stream; stream k follows channel ``k % shape.channels``."""
        ...

    async def publish(self, channel: int, i: int, batch: int) -> None:
        """Publish ``batch`` events numbered ``i`` on ``channel``, stamping ``t`` at the start."""
        ...

    async def settle(self) -> None:
        """After streams are closed: wait until the server has let them go."""
        ...

    async def stop(self) -> None: ...


@dataclass(slots=True)
class Collector:
    first_measured: int = 1 << 62
    latencies_ns: list[int] = field(default_factory=list)
    received: int = 0
    window_start: int = 1 << 62
    window_end: int = 1 << 62
    in_window: int = 0
    expected: int = 1 << 62
    complete: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self, data: bytes, now: int) -> None:
        payload = json.loads(data)["data"]
        if payload.get("i", -1) >= self.first_measured:
            self.received += 1
            self.latencies_ns.append(now - payload["t"])
            if self.received >= self.expected:
                self.complete.set()
        if self.window_start <= now <= self.window_end:
            self.in_window += 1


@dataclass(frozen=True, slots=True)
class Measurement:
    published: int
    publish_rate: float
    expected: int
    received: int
    undelivered: int
    latency: Distribution
    sends_per_s: float
    server_cpu_us_per_send: float
    client_cpu_share: float
    open_s: float

    def as_json(self) -> dict[str, float | int]:
        return {
            "published": self.published,
            "publish_rate": self.publish_rate,
            "expected": self.expected,
            "received": self.received,
            "undelivered": self.undelivered,
            "p50_ms": self.latency.p50,
            "p95_ms": self.latency.p95,
            "p99_ms": self.latency.p99,
            "max_ms": self.latency.max,
            "sends_per_s": self.sends_per_s,
            "server_cpu_us_per_send": self.server_cpu_us_per_send,
            "client_cpu_share": self.client_cpu_share,
            "open_s": self.open_s,
        }


async def open_streams(
    server: ServerProcess, paths: Sequence[str], concurrency: int = OPEN_CONCURRENCY
) -> list[RawSSEStream]:
    gate = asyncio.Semaphore(concurrency)

    async def one(path: str) -> RawSSEStream:
        async with gate:
            return await RawSSEStream.open(server.host, server.port, path)

    results = await asyncio.gather(*(one(path) for path in paths), return_exceptions=True)
    streams = [r for r in results if isinstance(r, RawSSEStream)]
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        await close_streams(streams)
        raise RuntimeError(
            f"{len(errors)} of {len(paths)} streams failed to open on {server.name}: {errors[0]!r}"
        )
    return streams


async def close_streams(streams: Sequence[RawSSEStream]) -> None:
    await asyncio.gather(*(stream.aclose() for stream in streams), return_exceptions=True)


async def _read(stream: RawSSEStream, collector: Collector) -> None:
    parser = FrameParser()
    with contextlib.suppress(ConnectionError, OSError):
        async for chunk in stream.chunks():
            now = time.time_ns()
            for frame in parser.feed(chunk):
                if frame.event == b"llm.delta" and frame.data is not None:
                    collector.take(frame.data, now)


class Publishes(Protocol):
    async def publish(self, channel: int, i: int, batch: int) -> None:
        """Publish ``batch`` events numbered ``i`` on ``channel``, stamping ``t`` at the start."""
        ...


class Publisher:
    """A shape's events published to anything with ``publish`` (a ``Target``, or a peer of
    case 12 read through its own client library), paced or back to back, at most
    ``PUBLISH_IN_FLIGHT`` at a time."""

    def __init__(self, target: Publishes, shape: Shape) -> None:
        self._target = target
        self._shape = shape
        self._gate = asyncio.Semaphore(PUBLISH_IN_FLIGHT)
        self._pending: set[asyncio.Task[None]] = set()
        self.next_i = 0

    async def _fire(self, i: int) -> None:
        try:
            await self._target.publish(i % self._shape.channels, i, self._shape.batch)
        finally:
            self._gate.release()

    async def paced(self, seconds: float) -> int:
        """Open loop at the shape's rate for ``seconds``; returns how many were published."""
        loop = asyncio.get_running_loop()
        count = max(1, round(self._shape.rate * seconds))
        start = loop.time()
        for n in range(count):
            delay = start + n / self._shape.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._gate.acquire()
            task = asyncio.create_task(self._fire(self.next_i))
            self.next_i += 1
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        await self.wait()
        return count

    async def closed_loop(self, seconds: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        first = self.next_i
        while loop.time() < deadline:
            await self._gate.acquire()
            task = asyncio.create_task(self._fire(self.next_i))
            self.next_i += 1
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        await self.wait()
        return self.next_i - first

    async def wait(self) -> None:
        """Until every publish in flight is done; the first failure is raised."""
        errors: list[BaseException] = []
        while self._pending:
            results = await asyncio.gather(*list(self._pending), return_exceptions=True)
            errors += [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def abandon(self) -> None:
        """Cleaning up after a failure: let what is in flight finish, ignore its errors."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


async def measure(target: Target, shape: Shape, *, warm_s: float, drain_s: float) -> Measurement:
    """One repetition of one shape against one target (streams opened fresh, closed after)."""
    paths = await target.stream_paths(shape)
    collector = Collector()
    opened = time.perf_counter()
    streams = await open_streams(target.server, paths)
    open_s = time.perf_counter() - opened
    readers = [asyncio.create_task(_read(stream, collector)) for stream in streams]
    publisher = Publisher(target, shape)
    try:
        await asyncio.sleep(0.2)  # let the replay/first frames of every stream pass
        if shape.closed_loop:
            await publisher.closed_loop(warm_s)
        else:
            await publisher.paced(warm_s)
        collector.first_measured = publisher.next_i
        server_cpu, client_cpu = target.server.cpu_seconds(), own_cpu_seconds()
        started = time.perf_counter()
        collector.window_start = time.time_ns()
        if shape.closed_loop:
            published = await publisher.closed_loop(shape.duration_s)
        else:
            published = await publisher.paced(shape.duration_s)
        collector.window_end = time.time_ns()
        wall = time.perf_counter() - started
        server_cpu = target.server.cpu_seconds() - server_cpu
        client_cpu = own_cpu_seconds() - client_cpu
        expected = collector.expected = published * shape.fan * shape.batch
        if collector.received < expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collector.complete.wait(), drain_s)
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await close_streams(streams)
        await publisher.abandon()
    await target.settle()
    sends = collector.in_window
    return Measurement(
        published=published,
        publish_rate=published / wall,
        expected=expected,
        received=collector.received,
        undelivered=max(0, expected - collector.received),
        latency=Distribution.of_ns(collector.latencies_ns),
        sends_per_s=sends / wall,
        server_cpu_us_per_send=server_cpu / sends * 1e6 if sends else float("nan"),
        client_cpu_share=client_cpu / wall,
        open_s=open_s,
    )


async def idle_memory_kib_per_stream(target: Target, paths: Sequence[str]) -> float:
    """Resident memory the server adds per open, idle stream (VmRSS after - before) / N.

    Run against a freshly started server: a few streams are opened and closed first so that
    lazily imported code and first-use caches are not charged to the streams.
    """
    warm = await open_streams(target.server, paths[: min(10, len(paths))])
    await asyncio.sleep(0.3)
    await close_streams(warm)
    await target.settle()
    await asyncio.sleep(0.3)
    before = target.server.rss_kib()
    streams = await open_streams(target.server, paths)
    readers = [asyncio.create_task(_read(stream, Collector())) for stream in streams]
    try:
        await asyncio.sleep(1.0)
        after = target.server.rss_kib()
    finally:
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await close_streams(streams)
    await target.settle()
    return (after - before) / len(paths)


def load_shapes(quick: bool) -> list[Shape]:
    """The shapes of cases 2 and 7: 1/100/1,000 streams at 100 and 1,000 events/s (quick:
    1 and 50 streams at 100 events/s for 2 s), all streams on one generation, saturation."""
    if quick:
        return [
            Shape("spread", 1, 100, 2.0),
            Shape("spread", 50, 100, 2.0),
            Shape("fanout", 50, 10, 2.0),
            Shape("saturate", 10, 0, 1.0),
        ]
    return [
        *(Shape("spread", streams, 100, 4.0) for streams in (1, 100, 1000)),
        *(Shape("spread", streams, 1000, 2.0) for streams in (1, 100, 1000)),
        Shape("fanout", 1000, 10, 3.0),
        Shape("saturate", 100, 0, 2.0),
    ]


def timing(quick: bool) -> tuple[float, float]:
    """(warm-up seconds, drain seconds) for ``measure``."""
    return (0.3, 5.0) if quick else (0.5, 5.0)


def idle_streams(quick: bool) -> int:
    return 50 if quick else 1000
