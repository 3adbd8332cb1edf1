"""The three servers the stream cases compare, each as a ``bench.load.Target``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import asyncpg
import httpx

from bench.asgi import DELTA_TEXT
from bench.genstream import Serve, delta
from bench.load import PUBLISH_IN_FLIGHT, Shape
from bench.processes import ServerProcess, free_port
from bench.sse import HttpConnection
from service.generation.runner import LogEmitter
from service.store import event_log
from service.store.db import Pool, asyncpg_dsn, connection
from service.store.generations import Claimed

SETTLE_TIMEOUT_S = 10.0


class ReferenceTarget:
    """The ceiling or the polling server (``bench/asgi.py`` protocol), published to by POST."""

    def __init__(self, name: str, server: ServerProcess, connections: list[HttpConnection]):
        self.name = name
        self.server = server
        self._idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
        for conn in connections:
            self._idle.put_nowait(conn)
        self._connections = connections

    @classmethod
    async def start(
        cls, name: str, module: str, work_dir: Path, env: dict[str, str] | None = None
    ) -> ReferenceTarget:
        port = free_port()
        server = await ServerProcess.start(
            name, ["-m", module, "--port", str(port)], log_dir=work_dir, port=port, env=env
        )
        try:
            connections = [
                await HttpConnection.open(server.host, server.port)
                for _ in range(PUBLISH_IN_FLIGHT)
            ]
        except BaseException:
            await server.stop()
            raise
        return cls(name, server, connections)

    async def stream_paths(self, shape: Shape) -> list[str]:
        return [f"/stream?channel={k % shape.channels}" for k in range(shape.streams)]

    async def publish(self, channel: int, i: int, batch: int) -> None:
        if batch != 1:
            raise ValueError(f"{self.name} publishes one event at a time")
        conn = await self._idle.get()
        try:
            t = time.time_ns()
            status, body = await conn.request("POST", f"/publish?channel={channel}&t={t}&i={i}")
        finally:
            self._idle.put_nowait(conn)
        if status != 200:
            raise RuntimeError(f"{self.name} publish answered {status}: {body!r}")

    async def settle(self) -> None:
        """Until the server reports no open stream (it has seen every disconnect)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.server.base_url, timeout=5.0) as client:
            while loop.time() < deadline:
                if json.loads((await client.get("/stats")).content)["streams"] == 0:
                    return
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for conn in self._connections:
            await conn.aclose()
        await self.server.stop()


class GenstreamTarget:
    """A ``serve`` subprocess (worker off) streaming generations the bench appends to through
    ``event_log.append`` with fence and keys, exactly as a worker's ``LogEmitter`` does."""

    name = "genstream"

    def __init__(
        self, serve: Serve, pool: Pool, claims: list[Claimed], writers: list[LogEmitter]
    ) -> None:
        self.serve = serve
        self.server = serve.server
        self._pool = pool
        self._claims = claims
        self._emitters = writers
        self.append_ns: list[int] = []  # how long each append took (start -> COMMIT returned)

    @classmethod
    async def start(
        cls,
        database_url: str,
        work_dir: Path,
        pool: Pool,
        claims: list[Claimed],
        writers: list[LogEmitter],
        **settings: str,
    ) -> GenstreamTarget:
        """Streams follow ``claims`` (see ``genstream.claimed_generations``), appended to by
        ``writers`` (``genstream.worker_writers``: through an appender, as a worker's runs).
        Several targets over the same claims must share them: a LogEmitter numbers its
        idempotency keys from its own count, and a second one would repeat keys (its appends
        would be taken for retries and skipped). ``settings``: GENSTREAM_* for serve."""
        return cls(await Serve.start(database_url, work_dir, **settings), pool, claims, writers)

    @property
    def writers(self) -> list[LogEmitter]:
        return self._emitters

    async def stream_paths(self, shape: Shape) -> list[str]:
        """Streams resume after each generation's current last seq: live events only."""
        ids = [claim.id for claim in self._claims[: shape.channels]]
        async with connection(self._pool) as conn:
            seqs = await event_log.select_last_seqs(conn, ids)
        return [
            self.serve.stream_path(ids[k % shape.channels], seqs[ids[k % shape.channels]])
            for k in range(shape.streams)
        ]

    async def publish(self, channel: int, i: int, batch: int) -> None:
        # t is taken as the events are made, right before the append starts.
        started = time.time_ns()
        event = delta({"t": started, "i": i, "text": DELTA_TEXT})
        await self._emitters[channel].emit(*[event] * batch)
        self.append_ns.append(time.time_ns() - started)

    async def settle(self) -> None:
        # genstream has no stream count endpoint: give it a moment to see the disconnects.
        await asyncio.sleep(0.5)

    async def stop(self) -> None:
        await self.serve.stop()


BENCH_APPLICATION = "genstream-bench"


async def bench_pool(database_url: str) -> Pool:
    """The bench's own connections, named so that ``server_connections`` leaves them out."""
    return await asyncpg.create_pool(
        asyncpg_dsn(database_url),
        min_size=1,
        max_size=PUBLISH_IN_FLIGHT,
        server_settings={"application_name": BENCH_APPLICATION},
    )


async def server_connections(pool: Pool) -> int:
    """Client connections to the bench database other than the bench's own: the serve
    process's pool and its LISTEN connection, when it is the only other client."""
    async with connection(pool) as conn:
        count: int = await conn.fetchval(
            """
            SELECT count(*)
            FROM pg_stat_activity
            WHERE datname = current_database()
              AND backend_type = 'client backend'
              AND application_name <> $1
            """,
            BENCH_APPLICATION,
        )
    return count
