"""What case 12's peers share: their server processes, the event they carry, delivery measured
at a client library, and the bookkeeping of a crash (kill -9 mid-append).

The peers (Redis Streams, NATS JetStream, and bare PostgreSQL as the reference) are read
through their own client libraries, in this process: what they deliver is where a service built
on them would start, before an HTTP hop of its own. genstream is measured over real SSE by
``bench.load.measure``; the peers by ``measure_live`` here, which publishes the same shapes
with the same ``bench.load.Publisher`` (paced, ``PUBLISH_IN_FLIGHT`` at a time, ``t`` stamped
as the write starts) and counts receipts with the same ``bench.load.Collector``, so the
figures differ by what follows the write only. Throughput windows are ``bench.appends``'s
``run_writers``; percentiles are ``bench.core``'s.

Redis and NATS run from Debian's packages (``make peers``), each a server process of the
bench's own on a free port with its data in a temporary directory, stopped in ``finally``
blocks, and killed with SIGKILL by the crash shape (and then restarted and stopped again).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bench.asgi import DELTA_TEXT
from bench.core import Distribution
from bench.load import Collector, Measurement, Publisher, Publishes, Shape
from bench.processes import cpu_seconds, own_cpu_seconds

INSTALL = "sudo apt-get install redis-server nats-server (or, as root: make peers)"
BINARIES = ("redis-server", "nats-server")
SBIN = "/usr/sbin:/usr/local/sbin"  # Debian puts nats-server here, outside a user's PATH
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
PR_SET_PDEATHSIG = 1
SETTLE_S = 0.2  # after readers open, before the warm-up: their first reads are in flight


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN)


def missing_binaries() -> str | None:
    """None when both servers are installed, else what is missing and the command to run."""
    missing = [name for name in BINARIES if find_binary(name) is None]
    if not missing:
        return None
    return f"case 12 (peers) needs Debian's {' and '.join(missing)}: {INSTALL}"


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the bench dies, however it dies (a timeout's
    SIGTERM, a test's kill), so that no server outlives it. Linux's PR_SET_PDEATHSIG."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Daemon:
    """A server binary run in the foreground as a child of the bench, its output appended to
    one log across restarts. Ready when its port accepts a connection (the peer's own module
    then waits for the server to answer). Its own child, so SIGKILL is followed by a reap."""

    def __init__(self, name: str, argv: Sequence[str], port: int, log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )

    async def start(self) -> None:
        """Started from the event loop's thread: the server's parent-death signal follows the
        thread that forked it."""
        self.proc = self._spawn()
        try:
            await self._wait_port()
        except BaseException:
            await self.stop()
            raise

    async def _wait_port(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                if loop.time() > deadline:
                    raise TimeoutError(f"{self.name} not listening in {READY_TIMEOUT_S}s") from None
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    def kill(self) -> None:
        """SIGKILL: the process ends where it is, with nothing flushed or synced on the way out
        (what the kernel already holds stays: see ``bench/cases/peers.py``)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    async def stop(self) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it is still there after a while."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        await asyncio.to_thread(proc.wait)


def event_json(i: int, t: int = 0) -> bytes:
    """The event the peers carry: a genstream ``llm.delta`` as its stream sends it (the fields
    and about the bytes of ``bench.asgi.event_frame``'s data), ``data.t`` and ``data.i`` for
    ``Collector``, and nothing a store adds (its id or sequence is the peer's own)."""
    return json.dumps(
        {
            "type": "llm.delta",
            "status": "running",
            "stage": "models",
            "progress": 0.5,
            "message": "Writing models",
            "timestamp": "2026-01-01T00:00:00.000000Z",
            "data": {"t": t, "i": i, "text": DELTA_TEXT},
        },
        separators=(",", ":"),
    ).encode()


def event_index(data: bytes) -> int:
    """``data.i`` of an event written by ``event_json``."""
    index: int = json.loads(data)["data"]["i"]
    return index


class LivePeer(Publishes, Protocol):
    """A peer under a delivery shape: ``streams`` readers, reader k following channel k."""

    name: str
    write_ns: list[int]  # each publish's write alone: start -> the server acknowledged it

    async def follow(self, streams: int, collector: Collector) -> None:
        """Open the readers, from the start of fresh streams; each hands every event it reads
        to ``collector.take(data, time.time_ns())`` at once."""
        ...

    async def unfollow(self) -> None:
        """Close the readers and drop the streams (the next shape starts clean)."""
        ...

    def server_cpu_seconds(self) -> float:
        """The server's CPU time so far (NaN where it is not one process)."""
        ...


async def measure_live(
    peer: LivePeer, shape: Shape, *, warm_s: float, drain_s: float
) -> Measurement:
    """One repetition of a ``spread`` shape against a peer: ``bench.load.measure`` with
    readers of the peer's client library in place of SSE streams."""
    collector = Collector()
    opened = time.perf_counter()
    await peer.follow(shape.streams, collector)
    open_s = time.perf_counter() - opened
    publisher = Publisher(peer, shape)
    try:
        await asyncio.sleep(SETTLE_S)
        await publisher.paced(warm_s)
        collector.first_measured = publisher.next_i
        server_cpu, client_cpu = peer.server_cpu_seconds(), own_cpu_seconds()
        started = time.perf_counter()
        collector.window_start = time.time_ns()
        published = await publisher.paced(shape.duration_s)
        collector.window_end = time.time_ns()
        wall = time.perf_counter() - started
        server_cpu = peer.server_cpu_seconds() - server_cpu
        client_cpu = own_cpu_seconds() - client_cpu
        expected = collector.expected = published * shape.fan * shape.batch
        if collector.received < expected:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(collector.complete.wait(), drain_s)
    finally:
        await publisher.abandon()
        await peer.unfollow()
    sends = collector.in_window
    return Measurement(
        published=published,
        publish_rate=published / wall,
        expected=expected,
        received=collector.received,
        undelivered=max(0, expected - collector.received),
        latency=Distribution.of_ns(collector.latencies_ns),
        sends_per_s=sends / wall,
        server_cpu_us_per_send=server_cpu / sends * 1e6 if sends else math.nan,
        client_cpu_share=client_cpu / wall,
        open_s=open_s,
    )


@dataclass(frozen=True, slots=True)
class Crash:
    """One kill -9 mid-append: writes acknowledged before it, and how many of those the
    restarted server no longer has (anything else it has is a write whose ack was lost)."""

    acknowledged: int
    missing: int
    stored: int
    restart_s: float

    def as_json(self) -> dict[str, float | int]:
        return {
            "acknowledged": self.acknowledged,
            "missing": self.missing,
            "stored": self.stored,
            "restart_s": self.restart_s,
        }


async def write_until_killed(
    append: Callable[[int, int], Awaitable[None]],
    writers: int,
    run_s: float,
    kill: Callable[[], None],
) -> list[set[int]]:
    """``writers`` writers appending back to back (``append(k, i)``: writer k's event i, one
    durable write), the server killed after ``run_s`` while they are at it; returns the
    indexes each writer had acknowledged. The writers are cancelled right after the kill,
    before the loop runs anything else: an acknowledgement read after the kill would have been
    sent by a server already dead, and is not counted."""
    acked: list[set[int]] = [set() for _ in range(writers)]

    async def writer(k: int) -> None:
        i = 0
        while True:
            await append(k, i)
            acked[k].add(i)
            i += 1

    tasks = [asyncio.create_task(writer(k)) for k in range(writers)]
    try:
        await asyncio.sleep(run_s)
        failed = [task for task in tasks if task.done()]
        if failed:  # a writer stopped before the kill: that is a bench failure, not a crash
            failed[0].result()
            raise RuntimeError("a writer stopped before the kill")
        kill()
    finally:
        # Cancelled again until done: a client library may turn a cancel that lands in its
        # clean-up after a dead connection into an error of its own (and a retry).
        pending = set(tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.1)
    if not all(acked):
        raise RuntimeError(f"a writer had no write acknowledged in {run_s}s before the kill")
    return acked


def crash_of(acked: Sequence[set[int]], stored: Sequence[set[int]], restart_s: float) -> Crash:
    return Crash(
        acknowledged=sum(len(indexes) for indexes in acked),
        missing=sum(len(a - s) for a, s in zip(acked, stored, strict=True)),
        stored=sum(len(indexes) for indexes in stored),
        restart_s=restart_s,
    )


def scratch_dir(work_dir: Path, name: str) -> Path:
    """A fresh directory for a server's data under the bench's work directory."""
    path = work_dir / f"{name}-{os.getpid()}-{time.monotonic_ns()}"
    path.mkdir(parents=True)
    return path


PROBE_BYTES = 256  # about one event


def fsync_probe(directory: Path, writes: int, *, preallocated: bool) -> Distribution:
    """The disk under every durable write here: ``writes`` writes of ``PROBE_BYTES``, each
    followed by ``fdatasync``, into a file that grows with each (as Redis's AOF and NATS's
    blocks do: the new size is metadata to sync too) or into one written in full and synced
    beforehand (as PostgreSQL's WAL segments are). Blocking: run it in a thread."""
    path = directory / f"fsync-probe-{os.getpid()}-{time.monotonic_ns()}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        if preallocated:
            os.write(fd, bytes(PROBE_BYTES * writes))
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        block = b"x" * PROBE_BYTES
        took = []
        for _ in range(writes):
            started = time.perf_counter_ns()
            os.write(fd, block)
            os.fdatasync(fd)
            took.append(time.perf_counter_ns() - started)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return Distribution.of_ns(took)
