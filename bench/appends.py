"""Append throughput: N concurrent writers, each appending to its own generation, for a window.

Each writer appends back to back; appends that complete inside the timed window count (the
warm-up before it fills prepared-statement caches and the pool), up to the first one past its
end. events/s = the sum of each writer's events counted / the time it counted them over.
Every commit is durable (the cluster runs PostgreSQL's default settings).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from uuid import UUID

import asyncpg

from bench.genstream import (
    BARE_FINISH,
    BARE_GROUP_INSERT,
    BARE_INSERT,
    LOCKED_INSERT,
    claimed_generations,
    delta,
    emitters,
    finish,
    finished,
    worker_writers,
)
from service.events import NewEvent
from service.generation.appender import Appender
from service.generation.runner import LogEmitter
from service.store import event_log
from service.store.db import asyncpg_dsn, create_pool

WARM_S = 0.3


async def run_writers(
    writers: int, append_once: Callable[[int], Awaitable[int]], seconds: float
) -> float:
    """Events/s over the window; ``append_once(k)`` appends for writer k, returns its events.

    Each writer counts from the window's start to its first append that completes past the
    window's end, that append included, over that time: a stall longer than the window (a
    checkpoint's fsync on a busy machine) lowers the rate instead of leaving nothing counted.
    """
    start = time.perf_counter() + WARM_S
    end = start + seconds
    rates = [0.0] * writers

    async def writer(k: int) -> None:
        counted = 0
        while True:
            done = await append_once(k)
            now = time.perf_counter()
            if now >= start:
                counted += done
            if now > end:
                rates[k] = counted / (now - start)
                return

    async with asyncio.TaskGroup() as group:  # one failing writer stops the others
        for k in range(writers):
            group.create_task(writer(k))
    return sum(rates)


async def service_rate(database_url: str, writers: int, batch: int, seconds: float) -> float:
    """genstream's own append path: ``LogEmitter.emit`` (pool acquire, ``event_log.append``
    with the run's fence and per-event idempotency keys), one pool connection per writer."""
    pool = await create_pool(database_url, min_size=writers, max_size=writers)
    try:
        claims = await claimed_generations(pool, writers)
        return await _emit_rate(emitters(pool, claims), batch, seconds)
    finally:
        await pool.close()


async def grouped_rate(database_url: str, writers: int, batch: int, seconds: float) -> float:
    """genstream's append path as a worker's runs take it: ``LogEmitter.emit`` through the
    process's ``Appender``, which sends whatever waits as one ``event_log.append_many`` (one
    statement, one commit) while the group before it is in flight."""
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        claims = await claimed_generations(pool, writers)
        async with worker_writers(pool, claims) as log_emitters:
            return await _emit_rate(log_emitters, batch, seconds)
    finally:
        await pool.close()


async def _emit_rate(log_emitters: list[LogEmitter], batch: int, seconds: float) -> float:
    """Events/s of every emitter emitting ``batch`` deltas back to back, then each run ended."""
    events: tuple[NewEvent, ...] = tuple(delta() for _ in range(batch))

    async def append_once(k: int) -> int:
        await log_emitters[k].emit(*events)
        return batch

    rate = await run_writers(len(log_emitters), append_once, seconds)
    await finish(log_emitters)
    return rate


def bare_columns(event: NewEvent, batch: int) -> tuple[list[object], ...]:
    """``BARE_INSERT``'s column arrays for ``batch`` copies of ``event``."""
    payload = json.dumps(dict(event.data), separators=(",", ":"))
    values = (event.type.value, event.status.value, event.stage, event.progress, event.message)
    return tuple([value] * batch for value in (*values, payload))


async def bare_rate(database_url: str, writers: int, batch: int, seconds: float) -> float:
    """The reference: a bare asyncpg connection per writer looping ``BARE_INSERT`` (INSERT +
    pg_notify in one statement) into the same table, for generations of its own."""
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        claims = await claimed_generations(pool, writers)
    finally:
        await pool.close()
    columns = bare_columns(delta(), batch)
    conns = [await asyncpg.connect(asyncpg_dsn(database_url)) for _ in range(writers)]
    seqs = [1] * writers  # seq 1 is the generation's queued event
    try:

        async def append_once(k: int) -> int:
            await conns[k].fetchval(BARE_INSERT, claims[k].id, seqs[k], *columns)
            seqs[k] += batch
            return batch

        rate = await run_writers(writers, append_once, seconds)
        terminal = bare_columns(finished(), 1)
        for k, conn in enumerate(conns):
            await conn.fetchval(BARE_INSERT, claims[k].id, seqs[k], *terminal)
            await conn.execute(BARE_FINISH, claims[k].id, seqs[k] + 1)
        return rate
    finally:
        for conn in conns:
            await conn.close()


class BareGroups:
    """The bare reference's group commit, as ``Appender`` groups: the writers' batches wait in
    a list, and one connection sends everything waiting as ONE ``BARE_GROUP_INSERT`` whenever
    the statement before it has returned."""

    def __init__(self, conn: asyncpg.Connection[asyncpg.Record], columns: tuple[list[object], ...]):
        self._conn = conn
        self._columns = columns
        self._waiting: list[tuple[UUID, int, asyncio.Future[None]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def append(self, generation_id: UUID, seq: int) -> None:
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((generation_id, seq, done))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send())
        await done

    async def _send(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                ids, seqs = [g for g, _, _ in group], [s for _, s, _ in group]
                await self._conn.fetch(BARE_GROUP_INSERT, ids, seqs, *self._columns)
            except Exception as exc:
                for *_, done in group:
                    done.set_exception(exc)
            else:
                for *_, done in group:
                    done.set_result(None)
        self._sending = None


async def bare_grouped_rate(database_url: str, writers: int, batch: int, seconds: float) -> float:
    """The bare reference grouped the way ``Appender`` groups (``BareGroups``), one connection
    for all the writers: what a group commit of bare INSERT + NOTIFY reaches."""
    pool = await create_pool(database_url, min_size=1, max_size=4)
    try:
        claims = await claimed_generations(pool, writers)
    finally:
        await pool.close()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    groups = BareGroups(conn, bare_columns(delta(), batch))
    seqs = [1] * writers
    try:

        async def append_once(k: int) -> int:
            await groups.append(claims[k].id, seqs[k])
            seqs[k] += batch
            return batch

        rate = await run_writers(writers, append_once, seconds)
        terminal = bare_columns(finished(), 1)
        for k, claim in enumerate(claims):
            await conn.fetchval(BARE_INSERT, claim.id, seqs[k], *terminal)
            await conn.execute(BARE_FINISH, claim.id, seqs[k] + 1)
        return rate
    finally:
        await conn.close()


LAYERS = (
    "bare INSERT + NOTIFY",
    "+ seq from the generation row (UPDATE, row lock)",
    "genstream's statement (+ projection, fence, keys)",
    "genstream's path (+ pool, LogEmitter)",
    "through the appender, alone (+ a hop to its task, - the acquire: its connection is kept)",
)


async def layer_rates(database_url: str, seconds: float) -> dict[str, float]:
    """One writer, one event per append, the append built up a layer at a time (``LAYERS``),
    each on a generation of its own: appends/s of each, measured back to back."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    appender = Appender(pool)
    appender.start()
    try:
        claims = await claimed_generations(pool, len(LAYERS))
        emitter = emitters(pool, claims[3:4])[0]
        grouped = emitters(pool, claims[4:5], appender)[0]
        event = delta()
        columns = bare_columns(event, 1)
        fields = (event.type.value, event.status.value, event.stage, event.progress, event.message)
        payload = json.dumps(dict(event.data), separators=(",", ":"))
        seq = [1]
        keys = [0]

        async def bare(_k: int) -> int:
            await conn.fetchval(BARE_INSERT, claims[0].id, seq[0], *columns)
            seq[0] += 1
            return 1

        async def locked(_k: int) -> int:
            await conn.fetchval(LOCKED_INSERT, claims[1].id, *fields, payload)
            return 1

        async def statement(_k: int) -> int:
            keys[0] += 1
            await event_log.append(
                conn, claims[2].id, [event], fence=claims[2].attempt, keys=[f"b.{keys[0]}"]
            )
            return 1

        async def service(_k: int) -> int:
            await emitter.emit(event)
            return 1

        async def alone(_k: int) -> int:
            await grouped.emit(event)
            return 1

        rates = {}
        layered = (bare, locked, statement, service, alone)
        for layer, append_once in zip(LAYERS, layered, strict=True):
            rates[layer] = await run_writers(1, append_once, seconds)
        await conn.fetchval(BARE_INSERT, claims[0].id, seq[0], *bare_columns(finished(), 1))
        await conn.execute(BARE_FINISH, claims[0].id, seq[0] + 1)
        for claim in claims[1:3]:
            await event_log.append(conn, claim.id, [finished()])
        await finish([emitter, grouped])
        return rates
    finally:
        await appender.stop()
        await conn.close()
        await pool.close()
