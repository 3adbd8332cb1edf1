"""The three servers the stream cases compare, each as a ``bench.load.Target``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx

from bench.asgi import DELTA_TEXT
from bench.genstream import Serve, delta, emitters, last_seqs
from bench.load import PUBLISH_IN_FLIGHT, Shape
from bench.processes import ServerProcess, free_port
from bench.sse import HttpConnection
from service.generation.runner import LogEmitter
from service.store.db import Pool, create_pool
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
    async def start(cls, name: str, module: str, work_dir: Path) -> ReferenceTarget:
        port = free_port()
        server = await ServerProcess.start(
            name, ["-m", module, "--port", str(port)], log_dir=work_dir, port=port
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

    async def publish(self, channel: int, i: int) -> None:
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

    @classmethod
    async def start(
        cls,
        database_url: str,
        work_dir: Path,
        pool: Pool,
        claims: list[Claimed],
        writers: list[LogEmitter] | None = None,
    ) -> GenstreamTarget:
        """Streams follow ``claims`` (see ``genstream.claimed_generations``). Several targets
        over the same claims must share ``writers``: a LogEmitter numbers its idempotency keys
        from its own count, and a second one would repeat keys (its appends would be taken
        for retries and skipped)."""
        writers = writers if writers is not None else emitters(pool, claims)
        return cls(await Serve.start(database_url, work_dir), pool, claims, writers)

    @property
    def writers(self) -> list[LogEmitter]:
        return self._emitters

    async def stream_paths(self, shape: Shape) -> list[str]:
        """Streams resume after each generation's current last seq: live events only."""
        ids = [claim.id for claim in self._claims[: shape.channels]]
        seqs = await last_seqs(self._pool, ids)
        return [
            self.serve.stream_path(ids[k % shape.channels], seqs[ids[k % shape.channels]])
            for k in range(shape.streams)
        ]

    async def publish(self, channel: int, i: int) -> None:
        # t is taken as the event is made, right before the append starts.
        await self._emitters[channel].emit(delta({"t": time.time_ns(), "i": i, "text": DELTA_TEXT}))

    async def settle(self) -> None:
        # genstream has no stream count endpoint: give it a moment to see the disconnects.
        await asyncio.sleep(0.5)

    async def stop(self) -> None:
        await self.serve.stop()


async def bench_pool(database_url: str) -> Pool:
    return await create_pool(database_url, min_size=1, max_size=PUBLISH_IN_FLIGHT)
