"""The bare PostgreSQL reference of case 12, and the cluster its crash shape kills.

What PostgreSQL does as an event stream with nothing of genstream's on top, in the same
database and table as genstream (``generation_events``), so that genstream's ratio to it is
what genstream adds:

* append throughput is case 1's reference, ``bench.appends.bare_rate``: one connection per
  writer, INSERT + ``pg_notify`` as one statement (one transaction, one durable commit);
* a live reader is a ``LISTEN`` callback on one connection (as a genstream ``serve`` process
  has one); publishers insert one event and notify its JSON in the same statement
  (``LIVE_INSERT``), so the notification is the event: no read-back;
* catch-up is case 4's reference, ``bench.cases.catchup.read_bare``: 1,000-row keyset pages;
* the crash writes ``BARE_INSERT`` per event on a connection per writer.

The crash shape never kills the bench's database (``BENCH_DATABASE_URL`` may be a server of
somebody else's): ``CrashCluster`` is a throwaway embedded cluster of its own, started as
``make run`` starts one, with PostgreSQL's default settings (durable commits), migrated to
head; genstream's crash (``genstream_crash``) runs on it too, since genstream's writes are
exactly as durable as the PostgreSQL under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from uuid import UUID

import asyncpg

from bench.appends import bare_columns
from bench.asgi import DELTA_TEXT
from bench.genstream import (
    BARE_FINISH,
    BARE_INSERT,
    claimed_generations,
    delta,
    finished,
)
from bench.load import PUBLISH_IN_FLIGHT, Collector
from bench.peer_load import Crash, crash_of, write_until_killed
from service.generation.runner import LogEmitter
from service.store.db import Pool, asyncpg_dsn, create_pool
from service.store.embedded import EmbeddedCluster
from service.store.generations import Claimed
from service.store.migrate import upgrade

CHANNEL = "bench_peers"  # not genstream's channel: no serve process wakes for these

# One event, stored and notified in one statement: the notification carries the event's JSON.
LIVE_INSERT = f"""
WITH inserted AS (
    INSERT INTO generation_events
        (generation_id, seq, type, status, stage, progress, message, payload, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, clock_timestamp())
    RETURNING seq
)
SELECT pg_notify('{CHANNEL}', $9)
FROM inserted
"""

# The events of the crash's generations that are in the log after the restart.
SELECT_STORED = """
SELECT generation_id, (payload->>'i')::int AS i
FROM generation_events
WHERE generation_id = ANY($1::uuid[])
  AND type = 'llm.delta'
"""
KILL_WAIT_S = 10.0


class BarePostgres:
    """The live reference: ``LIVE_INSERT`` from ``PUBLISH_IN_FLIGHT`` pooled connections, one
    LISTEN connection reading. Generations are claimed once (as many as the largest shape
    follows) and reused, each shape from its generations' next seq."""

    name = "bare PostgreSQL"

    def __init__(self, database_url: str, pool: Pool, claims: list[Claimed]) -> None:
        self._url = database_url
        self._pool = pool
        self._claims = claims
        self._seqs = [1] * len(claims)  # seq 1 is each generation's queued event
        self._listener: asyncpg.Connection | None = None
        self.write_ns: list[int] = []
        event = delta()
        self._fields = (
            event.type.value,
            event.status.value,
            event.stage,
            event.progress,
            event.message,
        )

    @classmethod
    async def start(cls, database_url: str, generations: int) -> BarePostgres:
        pool = await create_pool(database_url, min_size=1, max_size=PUBLISH_IN_FLIGHT)
        try:
            return cls(database_url, pool, await claimed_generations(pool, generations))
        except BaseException:
            await pool.close()
            raise

    async def stop(self) -> None:
        """Ends every generation as case 1's bare reference does (a terminal event, then the
        row to match), in one transaction: nothing of the bench's is left running."""
        try:
            terminal = bare_columns(finished(), 1)
            async with self._pool.acquire() as conn, conn.transaction():
                for k, claim in enumerate(self._claims):
                    await conn.fetchval(BARE_INSERT, claim.id, self._seqs[k], *terminal)
                    await conn.execute(BARE_FINISH, claim.id, self._seqs[k] + 1)
        finally:
            await self._pool.close()

    async def follow(self, streams: int, collector: Collector) -> None:
        if streams > len(self._claims):
            raise ValueError(f"{streams} streams, {len(self._claims)} generations claimed")

        def take(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            collector.take(str(payload).encode(), time.time_ns())

        self._listener = await asyncpg.connect(asyncpg_dsn(self._url))
        await self._listener.add_listener(CHANNEL, take)

    async def publish(self, channel: int, i: int, batch: int) -> None:
        if batch != 1:
            raise ValueError("the peers write one event at a time")
        t = time.time_ns()
        data = {"t": t, "i": i, "text": DELTA_TEXT}
        self._seqs[channel] += 1
        seq = self._seqs[channel]
        event = json.dumps(
            {
                "generation_id": str(self._claims[channel].id),
                "seq": seq,
                "type": self._fields[0],
                "status": self._fields[1],
                "stage": self._fields[2],
                "progress": self._fields[3],
                "message": self._fields[4],
                "data": data,
            },
            separators=(",", ":"),
        )
        payload = json.dumps(data, separators=(",", ":"))
        async with self._pool.acquire() as conn:
            await conn.fetchval(
                LIVE_INSERT, self._claims[channel].id, seq, *self._fields, payload, event
            )
        self.write_ns.append(time.time_ns() - t)

    async def unfollow(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        self._listener = None

    def server_cpu_seconds(self) -> float:
        return float("nan")  # a process per connection: not one server process to read


class CrashCluster:
    """A throwaway embedded cluster (default settings) that the crash shape kills and restarts.

    ``kill`` is a crash of the whole instance: the postmaster is stopped (SIGSTOP: it forks no
    one from then on), its children are listed and SIGKILLed, then the postmaster. The lock
    files it leaves (``postmaster.pid``, the socket's ``.lock``) name a process that this
    machine's init may never reap (a zombie answers ``kill -0``, so PostgreSQL would take it
    for a live postmaster): once every process of the instance is dead, ``kill`` removes them,
    as PostgreSQL itself would ignore them had the zombie been reaped. ``restart`` starts it
    again (crash recovery from the WAL) on the same port."""

    def __init__(self, cluster: EmbeddedCluster, url: str) -> None:
        self.cluster = cluster
        self.url = url

    @classmethod
    async def start(cls) -> CrashCluster:
        cluster = EmbeddedCluster(_fresh_root())  # no settings: PostgreSQL's defaults
        try:
            url = await asyncio.to_thread(cluster.start)
            await asyncio.to_thread(upgrade, url)  # Alembic runs its own event loop
        except BaseException:
            await asyncio.to_thread(cluster.destroy)
            raise
        return cls(cluster, url)

    def kill(self) -> None:
        pid_file = self.cluster.pgdata / "postmaster.pid"
        lines = pid_file.read_text().splitlines()
        postmaster, port = int(lines[0]), lines[3]
        os.kill(postmaster, signal.SIGSTOP)
        children = _children(postmaster)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.kill(postmaster, signal.SIGKILL)
        deadline = time.monotonic() + KILL_WAIT_S
        while any(_alive(pid) for pid in (postmaster, *children)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL's processes outlived SIGKILL by {KILL_WAIT_S}s")
            time.sleep(0.005)
        pid_file.unlink(missing_ok=True)
        (self.cluster.socket_dir / f".s.PGSQL.{port}.lock").unlink(missing_ok=True)

    async def restart(self) -> float:
        started = time.perf_counter()
        url = await asyncio.to_thread(self.cluster.start)
        if url != self.url:
            raise RuntimeError("the restarted cluster is not where it was")
        return time.perf_counter() - started

    async def destroy(self) -> None:
        await asyncio.to_thread(self.cluster.destroy)


def _fresh_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="genstream-bench-crash-"))
    root.chmod(0o755)  # the postgres user must reach inside when we are root
    return root


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(entry.path, "stat").read_text()
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """Running, or stopped: anything but gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


async def _stored(url: str, claims: Sequence[Claimed]) -> list[set[int]]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(SELECT_STORED, [claim.id for claim in claims])
    finally:
        await conn.close()
    by_id: dict[UUID, set[int]] = {claim.id: set() for claim in claims}
    for row in rows:
        by_id[row["generation_id"]].add(row["i"])
    return [by_id[claim.id] for claim in claims]


async def _claims(url: str, count: int) -> list[Claimed]:
    pool = await create_pool(url, min_size=1, max_size=2)
    try:
        return await claimed_generations(pool, count)
    finally:
        await pool.close()


async def bare_crash(cluster: CrashCluster, writers: int, run_s: float) -> Crash:
    """``BARE_INSERT`` per event, a connection per writer, each on its own generation; the
    cluster killed after ``run_s`` and restarted; acknowledged events it no longer has."""
    claims = await _claims(cluster.url, writers)
    conns = [await asyncpg.connect(asyncpg_dsn(cluster.url)) for _ in range(writers)]
    seqs = [1] * writers

    async def append(k: int, i: int) -> None:
        columns = bare_columns(delta({"i": i, "text": DELTA_TEXT}), 1)
        await conns[k].fetchval(BARE_INSERT, claims[k].id, seqs[k], *columns)
        seqs[k] += 1

    try:
        acked = await write_until_killed(append, writers, run_s, cluster.kill)
    finally:
        for conn in conns:
            conn.terminate()
    restart_s = await cluster.restart()
    return crash_of(acked, await _stored(cluster.url, claims), restart_s)


async def genstream_crash(cluster: CrashCluster, writers: int, run_s: float) -> Crash:
    """genstream's append path (``LogEmitter.emit``: fence, idempotency keys, one durable
    commit per event), a pooled connection per writer, on the crash cluster."""
    pool = await create_pool(cluster.url, min_size=writers, max_size=writers)
    try:
        claims = await claimed_generations(pool, writers)
        # No retries (the worker's are 30 s): a retry would only wait for the restart, and
        # what counts is what was acknowledged before the kill.
        log_emitters = [LogEmitter(pool, claim, retry_s=0.0) for claim in claims]

        async def append(k: int, i: int) -> None:
            await log_emitters[k].emit(delta({"i": i, "text": DELTA_TEXT}))

        def kill() -> None:
            cluster.kill()
            pool.terminate()  # or the pool would log its attempts to reconnect meanwhile

        acked = await write_until_killed(append, writers, run_s, kill)
    finally:
        pool.terminate()
    restart_s = await cluster.restart()
    return crash_of(acked, await _stored(cluster.url, claims), restart_s)
