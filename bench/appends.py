"""Append throughput: N concurrent writers, each appending to its own generation, for a window.

Each writer appends back to back; appends that complete inside the timed window count (the
warm-up before it fills prepared-statement caches and the pool). events/s = events counted /
window length. Every commit is durable (the cluster runs PostgreSQL's default settings).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

import asyncpg

from bench.genstream import (
    BARE_FINISH,
    BARE_INSERT,
    LOCKED_INSERT,
    claimed_generations,
    delta,
    emitters,
    finish,
    finished,
)
from service.events import NewEvent
from service.store import event_log
from service.store.db import asyncpg_dsn, create_pool

WARM_S = 0.3


async def run_writers(
    writers: int, append_once: Callable[[int], Awaitable[int]], seconds: float
) -> float:
    """Events/s over the window; ``append_once(k)`` appends for writer k, returns its events."""
    start = time.perf_counter() + WARM_S
    end = start + seconds
    counts = [0] * writers

    async def writer(k: int) -> None:
        while True:
            done = await append_once(k)
            now = time.perf_counter()
            if now > end:
                return
            if now >= start:
                counts[k] += done

    async with asyncio.TaskGroup() as group:  # one failing writer stops the others
        for k in range(writers):
            group.create_task(writer(k))
    return sum(counts) / seconds


async def service_rate(database_url: str, writers: int, batch: int, seconds: float) -> float:
    """genstream's own append path: ``LogEmitter.emit`` (pool acquire, ``event_log.append``
    with the run's fence and per-event idempotency keys), one pool connection per writer."""
    pool = await create_pool(database_url, min_size=writers, max_size=writers)
    try:
        claims = await claimed_generations(pool, writers)
        log_emitters = emitters(pool, claims)
        events: tuple[NewEvent, ...] = tuple(delta() for _ in range(batch))

        async def append_once(k: int) -> int:
            await log_emitters[k].emit(*events)
            return batch

        rate = await run_writers(writers, append_once, seconds)
        await finish(log_emitters)
        return rate
    finally:
        await pool.close()


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


LAYERS = (
    "bare INSERT + NOTIFY",
    "+ seq from the generation row (UPDATE, row lock)",
    "genstream's statement (+ projection, fence, keys)",
    "genstream's path (+ pool, LogEmitter)",
)


async def layer_rates(database_url: str, seconds: float) -> dict[str, float]:
    """One writer, one event per append, the append built up a layer at a time (``LAYERS``),
    each on a generation of its own: appends/s of each, measured back to back."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        claims = await claimed_generations(pool, len(LAYERS))
        emitter = emitters(pool, claims[3:])[0]
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

        rates = {}
        for layer, append_once in zip(LAYERS, (bare, locked, statement, service), strict=True):
            rates[layer] = await run_writers(1, append_once, seconds)
        await conn.fetchval(BARE_INSERT, claims[0].id, seq[0], *bare_columns(finished(), 1))
        await conn.execute(BARE_FINISH, claims[0].id, seq[0] + 1)
        for claim in claims[1:3]:
            await event_log.append(conn, claim.id, [finished()])
        await finish([emitter])
        return rates
    finally:
        await conn.close()
        await pool.close()
