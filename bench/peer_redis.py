"""Redis Streams, a peer of case 12: Debian's ``redis-server`` with its append-only file on.

* The server is the bench's own (a temporary directory, a free port, 127.0.0.1 only), at
  ``appendfsync always`` (every write fsynced before its reply: what genstream's durable
  COMMIT gives) or ``everysec`` (written to the kernel before the reply, fsynced about once a
  second). RDB snapshots and automatic AOF rewrites are off: neither adds durability, and both
  fork the server in the middle of a window.
* A write is ``XADD <stream> * e <event JSON>``, one event a call; each writer has its own
  stream (a generation) and its own pooled connection.
* A live reader is a loop of ``XREAD COUNT 1000 BLOCK 1000`` on its stream, resuming after the
  last id it got (``0-0`` on a fresh stream), on a connection of its own: a blocked XREAD
  holds one, as a reader in a service would.
* Catch-up is ``XRANGE`` pages of 1,000: ``-`` first, then ``(<last id>`` (exclusive).

The client is redis-py's asyncio client, replies parsed by hiredis.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path
from typing import cast

import redis
from redis.asyncio import Redis

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

FSYNC_MODES = ("always", "everysec")
FIELD = b"e"
STOP = b"stop"  # an entry that tells a live reader to end
STOP_WAIT_S = 5.0
READ_COUNT = 1000
BLOCK_MS = 1000
PAGE = 1000
FILL_BATCH = 1000
CONNECT_CONCURRENCY = 100
ANSWER_TIMEOUT_S = 30.0


def version() -> str:
    binary = find_binary("redis-server")
    if binary is None:
        return "missing"
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


# A stream's entries as redis-py returns them with RESP2 and undecoded replies.
Entries = list[tuple[bytes, dict[bytes, bytes]]]


def _entries(reply: object) -> Entries:
    """redis-py types its replies loosely (every decoding and protocol at once)."""
    return cast("Entries", reply)


class RedisServer:
    """One ``redis-server`` with AOF at ``fsync``, and a way to kill and restart it as it was."""

    def __init__(self, daemon: Daemon, fsync: str) -> None:
        self.daemon = daemon
        self.fsync = fsync

    @classmethod
    async def start(cls, work_dir: Path, fsync: str) -> RedisServer:
        binary = find_binary("redis-server")
        if binary is None:
            raise RuntimeError(missing_binaries())
        directory = scratch_dir(work_dir, f"redis-{fsync}")
        port = free_port()
        argv = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(directory),
            "--appendonly", "yes",
            "--appendfsync", fsync,
            "--save", "",
            "--auto-aof-rewrite-percentage", "0",
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        server = cls(Daemon(f"redis-server ({fsync})", argv, port, directory / "server.log"), fsync)
        await server._start()
        return server

    def client(self, *, single_connection: bool = False) -> Redis:
        return Redis(
            host="127.0.0.1",
            port=self.daemon.port,
            protocol=2,
            single_connection_client=single_connection,
        )

    async def _start(self) -> None:
        await self.daemon.start()
        try:
            await self._wait_answering()
        except BaseException:
            await self.daemon.stop()
            raise

    async def _wait_answering(self) -> None:
        """Until PING answers (a restarted server answers LOADING while it reads its AOF)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ANSWER_TIMEOUT_S
        client = self.client(single_connection=True)
        try:
            while True:
                try:
                    await client.ping()
                    return
                except redis.exceptions.BusyLoadingError:
                    if loop.time() > deadline:
                        raise
                    await asyncio.sleep(0.02)
        finally:
            await client.aclose()

    def kill(self) -> None:
        self.daemon.kill()

    async def restart(self) -> float:
        """Start it again on its directory and port; seconds until it answered."""
        started = time.perf_counter()
        await self._start()
        return time.perf_counter() - started

    async def stop(self) -> None:
        await self.daemon.stop()


class RedisPeer:
    """Redis Streams under case 12's shapes, on a server of its own (``RedisServer``)."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.name = f"Redis ({server.fsync})"
        self._client = server.client()  # pooled: one connection per concurrent caller
        self._round = 0
        self._keys: list[str] = []
        self._readers: list[asyncio.Task[None]] = []
        self._reader_clients: list[Redis] = []
        self.write_ns: list[int] = []

    @classmethod
    async def start(cls, work_dir: Path, fsync: str) -> RedisPeer:
        return cls(await RedisServer.start(work_dir, fsync))

    async def stop(self) -> None:
        try:
            with contextlib.suppress(redis.exceptions.RedisError, OSError):
                await self._client.aclose()
        finally:
            await self.server.stop()

    def _fresh_keys(self, count: int) -> list[str]:
        self._round += 1
        return [f"r{self._round}:{k}" for k in range(count)]

    async def append_rate(self, writers: int, seconds: float) -> float:
        """Events/s of ``writers`` writers, each XADDing to its own stream back to back."""
        keys = self._fresh_keys(writers)
        payload = event_json(0)

        async def append_once(k: int) -> int:
            await self._client.xadd(keys[k], {FIELD: payload})
            return 1

        try:
            return await run_writers(writers, append_once, seconds)
        finally:
            await self._client.delete(*keys)

    # -- live: bench.peer_load.LivePeer -------------------------------------------------------

    async def follow(self, streams: int, collector: Collector) -> None:
        self._keys = self._fresh_keys(streams)
        self._reader_clients = [self.server.client(single_connection=True) for _ in self._keys]
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def connect(client: Redis) -> None:
            async with gate:
                await client.ping()  # connected before the first publish

        await asyncio.gather(*(connect(client) for client in self._reader_clients))
        self._readers = [
            asyncio.create_task(self._read(client, key, collector))
            for client, key in zip(self._reader_clients, self._keys, strict=True)
        ]

    @staticmethod
    async def _read(client: Redis, key: str, collector: Collector) -> None:
        """Until an entry without an event (``unfollow``'s): a blocked XREAD is not cancelled,
        redis-py's asyncio client can hang on a cancel that lands in one."""
        last: bytes | str = "0-0"
        while True:
            found = await client.xread({key: last}, count=READ_COUNT, block=BLOCK_MS)
            now = time.time_ns()
            for _stream, entries in cast("list[tuple[bytes, Entries]]", found):
                for _id, fields in entries:
                    if FIELD not in fields:
                        return
                    collector.take(fields[FIELD], now)
                last = entries[-1][0]

    async def publish(self, channel: int, i: int, batch: int) -> None:
        if batch != 1:
            raise ValueError("the peers write one event at a time")
        t = time.time_ns()
        await self._client.xadd(self._keys[channel], {FIELD: event_json(i, t)})
        self.write_ns.append(time.time_ns() - t)

    async def unfollow(self) -> None:
        if self._keys:
            async with self._client.pipeline(transaction=False) as pipe:
                for key in self._keys:
                    pipe.xadd(key, {STOP: b""})
                await pipe.execute()
        if self._readers:
            _, late = await asyncio.wait(self._readers, timeout=STOP_WAIT_S)
            for reader in late:
                reader.cancel()
            await asyncio.gather(*self._readers, return_exceptions=True)
        await asyncio.gather(
            *(client.aclose() for client in self._reader_clients), return_exceptions=True
        )
        self._readers, self._reader_clients = [], []
        if self._keys:
            await self._client.delete(*self._keys)
        self._keys = []

    def server_cpu_seconds(self) -> float:
        return self.server.daemon.cpu_seconds()

    # -- catch-up -----------------------------------------------------------------------------

    async def fill(self, events: int) -> str:
        """A stream of ``events`` events (pipelines of 1,000 XADDs); its key."""
        (key,) = self._fresh_keys(1)
        for start in range(0, events, FILL_BATCH):
            async with self._client.pipeline(transaction=False) as pipe:
                for i in range(start, min(events, start + FILL_BATCH)):
                    pipe.xadd(key, {FIELD: event_json(i)})
                await pipe.execute()
        return key

    async def catch_up(self, key: str, events: int) -> float:
        """Events/s reading the whole stream in XRANGE pages; checks it got every event."""
        count = 0
        start: bytes | str = "-"
        last = b""
        began = time.perf_counter()
        while entries := _entries(await self._client.xrange(key, min=start, count=PAGE)):
            count += len(entries)
            last_id, fields = entries[-1]
            last = fields[FIELD]
            start = b"(" + last_id
        elapsed = time.perf_counter() - began
        if count != events or event_index(last) != events - 1:
            raise RuntimeError(f"{self.name}: XRANGE read {count} of {events} events")
        return events / elapsed

    async def drop(self, key: str) -> None:
        await self._client.delete(key)

    # -- crash --------------------------------------------------------------------------------

    async def crash(self, writers: int, run_s: float) -> Crash:
        """Writers XADDing on connections of their own, the server SIGKILLed after ``run_s``,
        restarted on its AOF; acknowledged events it no longer has."""
        keys = self._fresh_keys(writers)
        clients = [self.server.client(single_connection=True) for _ in keys]

        async def append(k: int, i: int) -> None:
            await clients[k].xadd(keys[k], {FIELD: event_json(i)})

        try:
            acked = await write_until_killed(append, writers, run_s, self.server.kill)
        finally:
            await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
        restart_s = await self.server.restart()
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await self._client.aclose()  # its connections went with the server
        self._client = self.server.client()
        stored = []
        for key in keys:
            entries = _entries(await self._client.xrange(key))
            stored.append({event_index(fields[FIELD]) for _id, fields in entries})
        await self._client.delete(*keys)
        return crash_of(acked, stored, restart_s)
