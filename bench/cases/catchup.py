"""Case 4: catch-up, one long finished generation read over SSE from ``after=0``.

Three readers of the same rows, in the same run, interleaved:

* bare keyset: asyncpg on its own connection, ``seq > $after ORDER BY seq LIMIT 1000`` pages,
  all columns decoded by asyncpg: what reading the rows costs at all;
* genstream's SQL, direct: ``event_log.select_events_after`` with the service's page size,
  the event JSON rendered by PostgreSQL (what the stream's reads cost without HTTP);
* genstream over SSE: a ``serve`` subprocess (worker off) and an httpx client streaming the
  response, splitting it into frames and checking that ids run 1..N without a gap and that
  the stream ends on the terminal event. (The client does not JSON-decode every event: that
  would measure the client's json module; it decodes the first and the last.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import httpx

from bench.core import Context, Outcome, Summary, Table, fmt_summary, ratio, row
from bench.genstream import BARE_KEYSET, Serve, claimed_generations, delta, emitters, finished
from bench.processes import own_cpu_seconds
from bench.sse import FrameParser
from service.events import EventType
from service.settings import Settings
from service.store import event_log
from service.store.db import asyncpg_dsn, create_pool

LOAD_BATCH = 1000
BARE_PAGE = 1000
SERVICE_PAGE = int(Settings.model_fields["stream_page_size"].default)
TARGET_SSE_EVENTS_PER_S = 100_000


async def make_generation(database_url: str, events: int) -> UUID:
    """A finished generation of exactly ``events`` events, appended through the worker path."""
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        claim = (await claimed_generations(pool, 1))[0]
        emitter = emitters(pool, [claim])[0]
        remaining = events - 2  # seq 1 is generation.queued; the last is the terminal event
        while remaining > 0:
            size = min(LOAD_BATCH, remaining)
            await emitter.emit(*[delta() for _ in range(size)])
            remaining -= size
        await emitter.emit(finished())
    finally:
        await pool.close()
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        # Set hint bits and the visibility map now, so no reader pays for them.
        await conn.execute("VACUUM (ANALYZE) generation_events")
    finally:
        await conn.close()
    return claim.id


@dataclass(frozen=True, slots=True)
class SSERead:
    events_per_s: float
    server_cpu_share: float  # CPU seconds of the serve process / wall seconds
    client_cpu_share: float  # the same for this (client) process
    reads_per_event: float  # body reads the client needed, per event


async def read_sse(serve: Serve, generation_id: UUID, events: int) -> SSERead:
    parser = FrameParser()
    count = last = reads = 0
    first_json = last_json = b""
    last_type: bytes | None = None
    async with httpx.AsyncClient(
        base_url=serve.server.base_url, timeout=httpx.Timeout(120.0)
    ) as client:
        server_cpu, client_cpu = serve.server.cpu_seconds(), own_cpu_seconds()
        started = time.perf_counter()
        async with client.stream("GET", serve.stream_path(generation_id, 0)) as response:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"stream answered {response.status_code}: {response.text}")
            async for chunk in response.aiter_raw():
                reads += 1
                for frame in parser.feed(chunk):
                    if frame.id is None:
                        continue
                    seq = int(frame.id)
                    if seq != last + 1:
                        raise RuntimeError(f"stream skipped from seq {last} to {seq}")
                    last = seq
                    count += 1
                    last_type = frame.event
                    last_json = frame.data or b""
                    if count == 1:
                        first_json = last_json
        elapsed = time.perf_counter() - started
        server_cpu = serve.server.cpu_seconds() - server_cpu
        client_cpu = own_cpu_seconds() - client_cpu
    if count != events or last_type != EventType.SUCCEEDED.value.encode():
        raise RuntimeError(f"got {count} of {events} events, ending with {last_type!r}")
    if json.loads(first_json)["seq"] != 1 or json.loads(last_json)["seq"] != events:
        raise RuntimeError("the first or last frame's JSON does not carry its seq")
    return SSERead(events / elapsed, server_cpu / elapsed, client_cpu / elapsed, reads / events)


async def read_bare(database_url: str, generation_id: UUID, events: int) -> float:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        count = after = 0
        started = time.perf_counter()
        while rows := await conn.fetch(BARE_KEYSET, generation_id, after, BARE_PAGE):
            count += len(rows)
            after = rows[-1]["seq"]
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    if count != events:
        raise RuntimeError(f"bare keyset read {count} of {events} rows")
    return events / elapsed


async def read_service_sql(database_url: str, generation_id: UUID, events: int) -> float:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        count = after = 0
        started = time.perf_counter()
        while page := await event_log.select_events_after(conn, generation_id, after, SERVICE_PAGE):
            count += len(page)
            after = page[-1].seq
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
    if count != events:
        raise RuntimeError(f"select_events_after read {count} of {events} rows")
    return events / elapsed


async def run(ctx: Context) -> Outcome:
    events = 10_000 if ctx.quick else 100_000
    outcome = Outcome(
        parameters={
            "events": events,
            "bare_page": BARE_PAGE,
            "service_page": SERVICE_PAGE,
            "client": f"httpx {httpx.__version__}, aiter_raw + frame split",
        }
    )
    generation_id = await make_generation(ctx.database_url, events)
    serve = await Serve.start(ctx.database_url, ctx.work_dir)
    rates: dict[str, list[float]] = {"bare": [], "sql": [], "sse": []}
    sse_reads: list[SSERead] = []
    try:
        # One unmeasured pass of each: caches, prepared statements, lazy imports.
        await read_bare(ctx.database_url, generation_id, events)
        await read_service_sql(ctx.database_url, generation_id, events)
        await read_sse(serve, generation_id, events)
        for _ in ctx.reps():
            rates["bare"].append(await read_bare(ctx.database_url, generation_id, events))
            rates["sql"].append(await read_service_sql(ctx.database_url, generation_id, events))
            sse_reads.append(await read_sse(serve, generation_id, events))
            rates["sse"].append(sse_reads[-1].events_per_s)
    finally:
        await serve.stop()

    labels = {
        "bare": f"bare asyncpg keyset read ({BARE_PAGE}-row pages, all columns)",
        "sql": f"genstream's SQL direct (select_events_after, {SERVICE_PAGE}-row pages)",
        "sse": "genstream over SSE to an httpx client, from after=0",
    }
    table = Table(
        f"Catch-up of a {events:,}-event generation (events/s)",
        ["reader", "events/s", "vs bare keyset"],
    )
    for key, label in labels.items():
        relative = ratio(rates[key], rates["bare"])
        table.add(label, fmt_summary(Summary.of(rates[key])), fmt_summary(relative))
        outcome.rows.append(
            row(
                {"reader": key, "events": events},
                events_per_s=Summary.of(rates[key]),
                ratio_to_bare=relative,
            )
        )
    outcome.tables.append(table)
    server_share = Summary.of([read.server_cpu_share for read in sse_reads])
    client_share = Summary.of([read.client_cpu_share for read in sse_reads])
    reads = Summary.of([read.reads_per_event for read in sse_reads])
    metrics = outcome.rows[-1]["metrics"]
    metrics["server_cpu_share"] = server_share.as_json()
    metrics["client_cpu_share"] = client_share.as_json()
    metrics["client_reads_per_event"] = reads.as_json()
    outcome.notes.append(
        f"during the SSE reads the serve process used {fmt_summary(server_share)} of a core "
        f"and the client {fmt_summary(client_share)} (PostgreSQL not counted); the client "
        f"needed {fmt_summary(reads)} body reads per event (near 1 means the server wrote "
        "every event separately, and each write cost the client a read)."
    )
    sse = Summary.of(rates["sse"]).median
    outcome.notes.append(
        f"target >= {TARGET_SSE_EVENTS_PER_S:,} events/s over SSE: "
        + ("met" if sse >= TARGET_SSE_EVENTS_PER_S else f"missed ({sse:,.0f})")
    )
    return outcome
