"""NATS JetStream, a peer of case 12: Debian's ``nats-server`` with JetStream on.

* The server is the bench's own: ``nats-server -js -sd <temporary directory>`` on a free port,
  127.0.0.1 only.
* Each measurement has a fresh file-backed stream (``storage: file``, one replica: there is one
  server), subjects ``<stream>.<k>``, one per generation; it is deleted after.
* A write is a JetStream publish, the message and then the server's ack once it has stored it
  (``js.publish``), one event a call; the writers share one connection, as a NATS client's
  callers do.
* A live reader is an ordered consumer (ephemeral, push, flow-controlled, what nats-py offers
  for reading a subject in order) on one subject, from a start sequence.
* Catch-up is one ordered consumer over the subject from its first sequence.

Durability: Debian's nats-server (2.9.10) acknowledges a message once it has written it to the
stream's block file (a write(2): the kernel has it), and fsyncs the file store on an interval
(60 s in 2.9; from 2.10 ``jetstream { sync_interval }``, 2 minutes by default, ``always`` for
a sync per write), not per message. A kill -9 of the process cannot lose what the kernel holds;
a kernel crash or a power cut can lose up to the interval. The case says so in its output.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy, StorageType

from bench.appends import run_writers
from bench.load import Collector
from bench.peer_load import (
    Crash,
    Daemon,
    crash_of,
    event_index,
    event_json,
    find_binary,
    missing_binaries,
    scratch_dir,
    write_until_killed,
)
from bench.processes import free_port

SUBSCRIBE_CONCURRENCY = 32  # consumers created at once (each is a JetStream API request)
FILL_BATCH = 1000
READY_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 120.0

Take = Callable[[Msg], Awaitable[None]]


def version() -> str:
    binary = find_binary("nats-server")
    if binary is None:
        return "missing"
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


async def _quiet(_error: Exception) -> None:
    """Connection errors surface in the calls that meet them; the crash shape causes them."""


class NatsServer:
    """One ``nats-server`` with JetStream's file store, and a way to kill and restart it."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    @classmethod
    async def start(cls, work_dir: Path) -> NatsServer:
        binary = find_binary("nats-server")
        if binary is None:
            raise RuntimeError(missing_binaries())
        directory = scratch_dir(work_dir, "nats")
        port = free_port()
        argv = [binary, "-js", "-sd", str(directory), "-a", "127.0.0.1", "-p", str(port)]
        server = cls(Daemon("nats-server", argv, port, directory / "server.log"))
        await server.daemon.start()
        return server

    async def connect(self) -> NATS:
        """A client connection, JetStream ready (a restarted server recovers its streams
        first); no reconnects: the bench wants a dead server to stay dead."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        client = await nats.connect(
            f"nats://127.0.0.1:{self.daemon.port}",
            allow_reconnect=False,
            error_cb=_quiet,
            name="genstream-bench",
        )
        while True:
            try:
                await client.jetstream().account_info()
                return client
            except (nats.errors.Error, nats.js.errors.Error):
                if loop.time() > deadline:
                    await client.close()
                    raise
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        self.daemon.kill()

    async def restart(self) -> float:
        started = time.perf_counter()
        await self.daemon.start()
        return time.perf_counter() - started

    async def stop(self) -> None:
        await self.daemon.stop()


class NatsPeer:
    """NATS JetStream under case 12's shapes, on a server of its own (``NatsServer``)."""

    name = "NATS JetStream"

    def __init__(self, server: NatsServer, client: NATS) -> None:
        self.server = server
        self._client = client
        self._js: JetStreamContext = client.jetstream()
        self._round = 0
        self._stream: str | None = None
        self._subjects: list[str] = []
        self._subscriptions: list[JetStreamContext.PushSubscription] = []
        self.write_ns: list[int] = []

    @classmethod
    async def start(cls, work_dir: Path) -> NatsPeer:
        server = await NatsServer.start(work_dir)
        try:
            return cls(server, await server.connect())
        except BaseException:
            await server.stop()
            raise

    async def stop(self) -> None:
        try:
            with contextlib.suppress(nats.errors.Error, OSError):
                await self._client.close()
        finally:
            await self.server.stop()

    async def _fresh_stream(self, subjects: int) -> tuple[str, list[str]]:
        self._round += 1
        name = f"S{self._round}"
        await self._js.add_stream(
            name=name,
            subjects=[f"s{self._round}.>"],
            storage=StorageType.FILE,
            num_replicas=1,
        )
        return name, [f"s{self._round}.{k}" for k in range(subjects)]

    async def append_rate(self, writers: int, seconds: float) -> float:
        """Events/s of ``writers`` writers, each publishing to its own subject and waiting for
        the ack before the next."""
        stream, subjects = await self._fresh_stream(writers)
        payload = event_json(0)

        async def append_once(k: int) -> int:
            await self._js.publish(subjects[k], payload)
            return 1

        try:
            return await run_writers(writers, append_once, seconds)
        finally:
            await self._js.delete_stream(stream)

    # -- live: bench.peer_load.LivePeer -------------------------------------------------------

    async def follow(self, streams: int, collector: Collector) -> None:
        self._stream, self._subjects = await self._fresh_stream(streams)
        start = (await self._js.stream_info(self._stream)).state.last_seq + 1

        async def take(msg: Msg) -> None:
            collector.take(msg.data, time.time_ns())

        self._subscriptions = await self._subscribe_all(self._stream, self._subjects, start, take)

    async def _subscribe_all(
        self, stream: str, subjects: Sequence[str], start: int, take: Take
    ) -> list[JetStreamContext.PushSubscription]:
        gate = asyncio.Semaphore(SUBSCRIBE_CONCURRENCY)

        async def one(subject: str) -> JetStreamContext.PushSubscription:
            async with gate:
                return await self._js.subscribe(
                    subject,
                    cb=take,
                    stream=stream,
                    ordered_consumer=True,
                    config=ConsumerConfig(
                        deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
                    ),
                )

        return list(await asyncio.gather(*(one(subject) for subject in subjects)))

    async def publish(self, channel: int, i: int, batch: int) -> None:
        if batch != 1:
            raise ValueError("the peers write one event at a time")
        t = time.time_ns()
        await self._js.publish(self._subjects[channel], event_json(i, t))
        self.write_ns.append(time.time_ns() - t)

    async def unfollow(self) -> None:
        await asyncio.gather(
            *(subscription.unsubscribe() for subscription in self._subscriptions),
            return_exceptions=True,
        )
        self._subscriptions = []
        if self._stream is not None:
            await self._js.delete_stream(self._stream)
        self._stream, self._subjects = None, []

    def server_cpu_seconds(self) -> float:
        return self.server.daemon.cpu_seconds()

    # -- catch-up -----------------------------------------------------------------------------

    async def fill(self, events: int) -> tuple[str, str]:
        """A stream of ``events`` events on one subject (async publishes, 1,000 acks awaited
        at a time); the stream and the subject."""
        stream, (subject,) = await self._fresh_stream(1)
        for start in range(0, events, FILL_BATCH):
            acks = [
                await self._js.publish_async(subject, event_json(i))
                for i in range(start, min(events, start + FILL_BATCH))
            ]
            await asyncio.gather(*acks)
        return stream, subject

    async def catch_up(self, stream: str, subject: str, events: int) -> float:
        """Events/s reading the subject from its first sequence with an ordered consumer
        (consumer creation included, as a stream's request is); checks it got every event."""
        done = asyncio.Event()
        count = 0
        last = b""

        async def take(msg: Msg) -> None:
            nonlocal count, last
            count += 1
            if count == events:
                last = msg.data
                done.set()

        began = time.perf_counter()
        (subscription,) = await self._subscribe_all(stream, [subject], 1, take)
        try:
            await asyncio.wait_for(done.wait(), READ_TIMEOUT_S)
        finally:
            await subscription.unsubscribe()
        elapsed = time.perf_counter() - began
        if event_index(last) != events - 1:
            raise RuntimeError(f"{self.name}: the ordered consumer's last event is not the last")
        return events / elapsed

    async def drop(self, stream: str) -> None:
        await self._js.delete_stream(stream)

    # -- crash --------------------------------------------------------------------------------

    async def crash(self, writers: int, run_s: float) -> Crash:
        """Writers publishing (each its own subject, one connection), the server SIGKILLed after
        ``run_s``, restarted on its store; acknowledged events it no longer has."""
        stream, subjects = await self._fresh_stream(writers)

        async def append(k: int, i: int) -> None:
            await self._js.publish(subjects[k], event_json(i))

        acked = await write_until_killed(append, writers, run_s, self.server.kill)
        with contextlib.suppress(nats.errors.Error, OSError):
            await self._client.close()
        restart_s = await self.server.restart()
        self._client = await self.server.connect()
        self._js = self._client.jetstream()
        stored = await self._read_all(stream, subjects)
        await self._js.delete_stream(stream)
        return crash_of(acked, stored, restart_s)

    async def _read_all(self, stream: str, subjects: Sequence[str]) -> list[set[int]]:
        """Every event the stream holds, as indexes per subject."""
        total = (await self._js.stream_info(stream)).state.messages
        index = {subject: k for k, subject in enumerate(subjects)}
        stored: list[set[int]] = [set() for _ in subjects]
        done = asyncio.Event()
        count = 0

        async def take(msg: Msg) -> None:
            nonlocal count
            stored[index[msg.subject]].add(event_index(msg.data))
            count += 1
            if count >= total:
                done.set()

        if total:
            everything = subjects[0].rpartition(".")[0] + ".>"
            (subscription,) = await self._subscribe_all(stream, [everything], 1, take)
            try:
                await asyncio.wait_for(done.wait(), READ_TIMEOUT_S)
            finally:
                await subscription.unsubscribe()
        return stored
