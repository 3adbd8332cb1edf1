"""Case 3: many concurrent streams on one ``serve`` process.

For each count (1,000 / 5,000 / 10,000), each stream following its own live generation, and
on a freshly started process per count (so memory freed by a smaller count is not reused and
hidden): the ``spread`` load of case 2 at 100 events/s, with keepalives every 2 s instead of
15 s so that every stream sends heartbeats while latency is measured (a round of heartbeats
over every stream at once is what stalls a naive server). Sampled during the run: the serve
process's database connections (``pg_stat_activity``, the bench's own left out) and its
resident memory. The in-memory ceiling (case 7's server) runs the same load beside it.

A count *holds* when every stream opened, every event arrived, and p99 < 50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from bench.cases.streaming import LATENCY_COLUMNS, latency_cells, measurement_row
from bench.core import Context, Outcome, Summary, Table, fmt_summary, ratio, row
from bench.genstream import claimed_generations, finish, worker_writers
from bench.load import Measurement, Shape, measure
from bench.load import timing as load_timing
from bench.processes import ServerProcess
from bench.targets import GenstreamTarget, ReferenceTarget, bench_pool, server_connections
from service.generation.runner import LogEmitter
from service.settings import Settings
from service.store.db import Pool
from service.store.generations import Claimed

COUNTS = (1_000, 5_000, 10_000)
QUICK_COUNTS = (50, 200)
RATE = 100.0
DURATION_S = 6.0
QUICK_DURATION_S = 2.0
KEEPALIVE_S = 2.0
HOLD_P99_MS = 50.0
SAMPLE_S = 0.25
POOL_MAX = int(Settings.model_fields["pool_max_size"].default)
NAMES = ("ceiling", "genstream")


@dataclass(slots=True)
class Sampler:
    """Peaks of the server's resident memory and (genstream) database connections."""

    server: ServerProcess
    pool: Pool | None
    rss_kib: int = 0
    connections: int = 0
    errors: list[str] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            self.rss_kib = max(self.rss_kib, self.server.rss_kib())
            if self.pool is not None:
                try:
                    self.connections = max(self.connections, await server_connections(self.pool))
                except Exception as exc:  # a sample lost is reported, never fatal
                    self.errors.append(repr(exc))
            await asyncio.sleep(SAMPLE_S)


@dataclass(frozen=True, slots=True)
class Run:
    measurement: Measurement | None
    failure: str | None
    kib_per_stream: float
    connections: int

    def holds(self) -> bool:
        m = self.measurement
        return m is not None and m.undelivered == 0 and m.latency.p99 < HOLD_P99_MS


async def _one(
    ctx: Context,
    name: str,
    shape: Shape,
    pool: Pool,
    claims: list[Claimed],
    writers: list[LogEmitter],
    drain_s: float,
) -> Run:
    target: GenstreamTarget | ReferenceTarget
    if name == "genstream":
        target = await GenstreamTarget.start(
            ctx.database_url, ctx.work_dir, pool, claims, writers,
            keepalive_s=str(KEEPALIVE_S),
        )  # fmt: skip
    else:
        env = {"BENCH_KEEPALIVE_S": str(KEEPALIVE_S)}
        target = await ReferenceTarget.start(name, "bench.ceiling_server", ctx.work_dir, env)
    try:
        await asyncio.sleep(0.5)
        before = target.server.rss_kib()
        sampler = Sampler(target.server, pool if name == "genstream" else None)
        sampling = asyncio.create_task(sampler.run())
        measurement: Measurement | None = None
        failure: str | None = None
        try:
            measurement = await measure(target, shape, warm_s=1.0, drain_s=drain_s)
        except RuntimeError as exc:  # streams that failed to open: this count does not hold
            failure = str(exc)
        finally:
            sampling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampling
        return Run(
            measurement=measurement,
            failure=failure,
            kib_per_stream=(sampler.rss_kib - before) / shape.streams,
            connections=sampler.connections,
        )
    finally:
        await target.stop()


def _values(runs: list[Run], metric: str) -> list[float]:
    values: list[float] = []
    for run in runs:
        m = run.measurement
        if m is None:
            continue
        values.append(
            {"p50_ms": m.latency.p50, "p99_ms": m.latency.p99, "open_s": m.open_s}[metric]
        )
    return values


async def run(ctx: Context) -> Outcome:
    counts = QUICK_COUNTS if ctx.quick else COUNTS
    duration = QUICK_DURATION_S if ctx.quick else DURATION_S
    _, drain_s = load_timing(ctx.quick)
    outcome = Outcome(
        parameters={
            "counts": list(counts),
            "events_per_s": RATE,
            "duration_s": duration,
            "keepalive_s": KEEPALIVE_S,
            "shape": "spread: one generation per stream, appends round-robin",
            "genstream": f"serve subprocess, worker off, pool max {POOL_MAX}, fresh per count",
        }
    )
    pool = await bench_pool(ctx.database_url)
    runs: dict[tuple[int, str], list[Run]] = {}
    try:
        claims = await claimed_generations(pool, max(counts))
        async with worker_writers(pool, claims) as writers:
            for rep in ctx.reps():
                for count in counts:
                    shape = Shape("spread", count, RATE, duration)
                    order = NAMES if rep % 2 == 0 else NAMES[::-1]
                    for name in order:
                        result = await _one(ctx, name, shape, pool, claims, writers, drain_s)
                        runs.setdefault((count, name), []).append(result)
            await finish(writers)
    finally:
        await pool.close()

    table = Table(
        f"Concurrent streams on one process, spread @ {RATE:,.0f} ev/s, keepalive every "
        f"{KEEPALIVE_S:g} s (median (min-max) over repetitions)",
        ["streams", "server", "open s", "DB connections (max)", "KiB/stream", *LATENCY_COLUMNS,
         "holds"],
    )  # fmt: skip
    largest_holding: int | None = None
    for count in counts:
        for name in NAMES:
            results = runs[(count, name)]
            measured = [r.measurement for r in results if r.measurement is not None]
            failures = [r.failure for r in results if r.failure]
            shape = Shape("spread", count, RATE, duration)
            cells = latency_cells(shape, measured) if measured else ["-"] * len(LATENCY_COLUMNS)
            connections = (
                fmt_summary(Summary.of([r.connections for r in results]))
                if name == "genstream"
                else "-"
            )
            holds = sum(r.holds() for r in results)
            table.add(
                f"{count:,}",
                name,
                fmt_summary(Summary.of(_values(results, "open_s"))) if measured else "-",
                connections,
                fmt_summary(Summary.of([r.kib_per_stream for r in results])),
                *cells,
                f"{holds}/{len(results)}",
            )
            if name == "genstream" and holds == len(results):
                largest_holding = count
            result_row = (
                measurement_row(shape, name, measured)
                if measured
                else row({"target": name, **shape.as_json()})
            )
            result_row["metrics"].update(
                kib_per_stream=Summary.of([r.kib_per_stream for r in results]).as_json(),
                db_connections_max=max(r.connections for r in results),
                holds=holds,
                failures=failures,
            )
            outcome.rows.append(result_row)
            for failure in failures:
                outcome.notes.append(f"{name} at {count:,} streams: {failure}")
        g, c = runs[(count, "genstream")], runs[(count, "ceiling")]
        if all(r.measurement for r in g + c):
            p99 = ratio(_values(g, "p99_ms"), _values(c, "p99_ms"))
            memory = ratio([r.kib_per_stream for r in g], [r.kib_per_stream for r in c])
            outcome.notes.append(
                f"{count:,} streams: genstream/ceiling p99 {fmt_summary(p99)}, "
                f"memory {fmt_summary(memory)}"
            )
            outcome.rows.append(
                row(
                    {"ratios": True, "streams": count},
                    ratio_genstream_to_ceiling_p99=p99,
                    memory_genstream_to_ceiling=memory,
                )
            )
    outcome.tables.append(table)
    connections_max = max(r.connections for count in counts for r in runs[(count, "genstream")])
    outcome.notes += [
        f"largest count that holds (every stream opened, every event arrived, p99 < "
        f"{HOLD_P99_MS:g} ms, every repetition): "
        + (f"{largest_holding:,}" if largest_holding else "none"),
        f"database connections of the serve process, max over every sample: {connections_max}"
        f" (limit: pool {POOL_MAX} + 1 listener = {POOL_MAX + 1})",
        "KiB/stream = (peak resident memory during the run - before the streams opened) / "
        "streams: open streams receiving events, so a little above idle.",
    ]
    outcome.rows.append(row({"summary": True}, largest_holding=largest_holding or 0,
                            db_connections_max=connections_max))  # fmt: skip
    return outcome
