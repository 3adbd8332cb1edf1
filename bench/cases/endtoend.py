"""Case 5: end to end, 50 concurrent offline generations through the whole service.

One ``serve`` process with its worker running 50 runs at once and the offline provider at
zero delay (so the model is never what is measured). The bench creates 50 generations over
HTTP (``POST /api/generations``, a real API key) and follows each over SSE with its
``stream_token`` from ``after=0``, as a browser would. Wall time runs from the first POST to
the last terminal event received. Every stream is then checked against the log: ids exactly
1..last_seq of its generation in order, ending on ``generation.succeeded``.

Then durable throughput through append + stream: 100 generations appended to back to back in
batches of 10 ``llm.delta`` events (as the generator's coalesced deltas arrive; 8 appends in
flight), each followed by one stream; events/s received by the streams, beside a bare asyncpg
loop paying one INSERT + NOTIFY commit per event with 16 writers (the ceiling one NOTIFY per
event puts on the cluster). The target (``TARGET_EVENTS_PER_S``): more than 10,000 durable
events/s received, i.e. well past that per-event ceiling, which only several events per commit
can reach.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx

from bench.appends import bare_rate
from bench.core import (
    Context,
    Distribution,
    Outcome,
    Summary,
    Table,
    fmt_summary,
    ratio,
    row,
)
from bench.genstream import Serve, claimed_generations, finish, worker_writers
from bench.load import Measurement, Shape, measure
from bench.sse import FrameParser, RawSSEStream
from bench.targets import GenstreamTarget, bench_pool
from service.access import keys
from service.events import EventType
from service.store import event_log
from service.store.db import Pool, connection

GENERATIONS = 50
QUICK_GENERATIONS = 5
OWNER = "bench-end-to-end"
SPEC: dict[str, Any] = {
    "project": "shop",
    "entities": [
        {"name": "User", "fields": {"email": "str", "name": "str", "age": "int"}},
        {"name": "Product", "fields": {"title": "str", "price": "float", "stock": "int"}},
        {"name": "Order", "fields": {"user_id": "int", "total": "float", "paid": "bool"}},
    ],
}
THROUGHPUT = Shape("throughput", 100, 0, 3.0, batch=10)
QUICK_THROUGHPUT = Shape("throughput", 10, 0, 1.0, batch=10)
BARE_WRITERS = 16
TARGET_EVENTS_PER_S = 10_000
TERMINAL = {t.value.encode() for t in (EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED)}


@dataclass(slots=True)
class Followed:
    generation_id: UUID
    posted_ns: int
    ids: list[int]
    last_type: bytes | None = None
    done_ns: int = 0


async def _create(client: httpx.AsyncClient, api_key: str) -> tuple[UUID, str, int]:
    posted = time.perf_counter_ns()
    response = await client.post(
        "/api/generations",
        # The event path, not the checks of the code: case 8 measures verification.
        json={"spec": SPEC, "provider": "offline", "verify": "off"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    if response.status_code != 201:
        raise RuntimeError(
            f"POST /api/generations answered {response.status_code}: {response.text}"
        )
    body = response.json()
    return UUID(body["id"]), body["stream_token"], posted


async def _follow(serve: Serve, generation_id: UUID, token: str, posted: int) -> Followed:
    followed = Followed(generation_id, posted, [])
    server = serve.server
    path = f"/api/generations/{generation_id}/stream?token={token}"
    stream = await RawSSEStream.open(server.host, server.port, path)
    parser = FrameParser()
    try:
        async for chunk in stream.chunks():
            for frame in parser.feed(chunk):
                if frame.id is None or frame.event is None:
                    continue  # the retry hint, keepalives
                followed.ids.append(int(frame.id))
                followed.last_type = frame.event
            if followed.last_type in TERMINAL:
                break
    finally:
        followed.done_ns = time.perf_counter_ns()
        await stream.aclose()
    return followed


async def _one_run(ctx: Context, pool: Pool, api_key: str, count: int) -> dict[str, Any]:
    serve = await Serve.start(
        ctx.database_url,
        ctx.work_dir,
        worker_concurrency=str(count),
        offline_delay_s="0",
    )
    try:
        async with httpx.AsyncClient(base_url=serve.server.base_url, timeout=60.0) as client:
            cpu_before = serve.server.cpu_seconds()
            started = time.perf_counter_ns()

            async def one() -> Followed:
                generation_id, token, posted = await _create(client, api_key)
                return await _follow(serve, generation_id, token, posted)

            followed = await asyncio.gather(*(one() for _ in range(count)))
            wall_s = (time.perf_counter_ns() - started) / 1e9
        cpu_s = serve.server.cpu_seconds() - cpu_before
    finally:
        await serve.stop()
    async with connection(pool) as conn:
        last_seqs = await event_log.select_last_seqs(conn, [f.generation_id for f in followed])
    complete = sum(
        f.ids == list(range(1, last_seqs[f.generation_id] + 1))
        and f.last_type == EventType.SUCCEEDED.value.encode()
        for f in followed
    )
    events = sum(len(f.ids) for f in followed)
    durations = Distribution.of_ns([f.done_ns - f.posted_ns for f in followed])
    return {
        "wall_s": wall_s,
        "events": events,
        "events_per_s": events / wall_s,
        "events_per_generation": events / count,
        "complete": complete,
        "generation_p50_ms": durations.p50,
        "generation_max_ms": durations.max,
        "serve_cpu_s": cpu_s,
    }


async def run(ctx: Context) -> Outcome:
    count = QUICK_GENERATIONS if ctx.quick else GENERATIONS
    outcome = Outcome(
        parameters={
            "generations": count,
            "provider": "offline, zero delay, verify off",
            "spec": SPEC,
            "serve": f"one process, worker concurrency {count}, default pool",
        }
    )
    shape = QUICK_THROUGHPUT if ctx.quick else THROUGHPUT
    outcome.parameters["throughput"] = shape.as_json()
    pool = await bench_pool(ctx.database_url)
    throughput: list[Measurement] = []
    bare: list[float] = []
    try:
        api_key = await keys.create_key(pool, OWNER)
        results = [await _one_run(ctx, pool, api_key, count) for _ in ctx.reps()]
        claims = await claimed_generations(pool, shape.channels)
        async with worker_writers(pool, claims) as writers:
            target = await GenstreamTarget.start(
                ctx.database_url, ctx.work_dir, pool, claims, writers
            )
            try:
                for _ in ctx.reps():
                    throughput.append(await measure(target, shape, warm_s=0.5, drain_s=10.0))
                    bare.append(
                        await bare_rate(ctx.database_url, BARE_WRITERS, 1, shape.duration_s)
                    )
            finally:
                await target.stop()
            await finish(writers)
    finally:
        await pool.close()

    def summary(metric: str) -> Summary:
        return Summary.of([float(r[metric]) for r in results])

    table = Table(
        f"End to end: {count} concurrent offline generations, POST to last terminal event "
        "(median (min-max) over repetitions)",
        ["wall s", "events", "events/s", "events/generation", "generation p50 ms",
         "generation max ms", "serve CPU s", "streams complete"],
    )  # fmt: skip
    complete = sum(r["complete"] for r in results)
    table.add(
        fmt_summary(summary("wall_s")),
        fmt_summary(summary("events")),
        fmt_summary(summary("events_per_s")),
        fmt_summary(summary("events_per_generation")),
        fmt_summary(summary("generation_p50_ms")),
        fmt_summary(summary("generation_max_ms")),
        fmt_summary(summary("serve_cpu_s")),
        f"{complete}/{count * len(results)}",
    )
    outcome.tables.append(table)
    outcome.rows.append(
        row(
            {"generations": count},
            **{metric: summary(metric) for metric in results[0] if metric != "complete"},
            complete=complete,
            streams=count * len(results),
        )
    )
    outcome.rows[-1]["repetitions"] = results
    outcome.notes.append(
        "complete = the stream's ids were exactly 1..last_seq of its generation, in order, "
        "ending on generation.succeeded"
    )
    received = [m.sends_per_s for m in throughput]  # one stream per generation: sends = events
    lost = sum(m.undelivered for m in throughput)
    versus = ratio(received, bare)
    flow = Table(
        f"Durable throughput through append + stream: {shape.label}, closed loop",
        ["events/s received", "bare INSERT+NOTIFY per event, 16 writers", "ratio",
         "undelivered", f"> {TARGET_EVENTS_PER_S:,}/s"],
    )  # fmt: skip
    flow.add(
        fmt_summary(Summary.of(received)),
        fmt_summary(Summary.of(bare)),
        fmt_summary(versus),
        str(lost),
        "yes" if Summary.of(received).median > TARGET_EVENTS_PER_S else "NO",
    )
    outcome.tables.append(flow)
    outcome.rows.append(
        row(
            {"throughput": True, **shape.as_json()},
            received_events_per_s=Summary.of(received),
            bare_per_event_notify_events_per_s=Summary.of(bare),
            ratio_received_to_bare_per_event=versus,
            undelivered=lost,
        )
    )
    if complete != count * len(results):
        outcome.status = "failed"
        outcome.reason = f"{count * len(results) - complete} stream(s) missed or repeated events"
    return outcome
