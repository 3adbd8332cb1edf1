"""Case 2: delivery latency, start of append -> an SSE client has the event.

genstream (a ``serve`` subprocess, worker off; the bench appends through the worker's
``LogEmitter``) beside the in-memory ceiling (case 7's server) and the old polling design
(``bench/polling_server.py``), under the same load shapes, interleaved within each repetition
(the order rotates between repetitions). Then resident memory per idle stream of each, on
freshly started processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from bench.cases.streaming import LATENCY_COLUMNS, latency_cells, measurement_row, summary
from bench.core import (
    Context,
    Distribution,
    Outcome,
    Summary,
    Table,
    bucket_quantile,
    fmt_summary,
    ratio,
    row,
)
from bench.genstream import claimed_generations, finish, worker_writers
from bench.load import (
    Measurement,
    Shape,
    Target,
    idle_memory_kib_per_stream,
    idle_streams,
    load_shapes,
    measure,
)
from bench.load import timing as load_timing
from bench.targets import GenstreamTarget, ReferenceTarget, bench_pool
from service.generation.runner import LogEmitter
from service.store.db import Pool
from service.store.generations import Claimed

CEILING = "bench.ceiling_server"
# serve's own measure of the stream path: from a commit's notification to its frame's write.
WRITE_LAG = "genstream_stream_write_lag_seconds"
POLLING = "bench.polling_server"
NAMES = ("ceiling", "genstream", "polling")


def _stream_path_ms(
    before: list[tuple[float, float]], after: list[tuple[float, float]]
) -> tuple[float, float]:
    """p50 and p99 of serve's stream path (ms) over one measurement, from two scrapes."""
    return bucket_quantile(before, after, 0.5) * 1e3, bucket_quantile(before, after, 0.99) * 1e3


def _metric(results: Sequence[Measurement], metric: str) -> list[float]:
    return list(summary(results, metric).values)


def _appends_table(
    shapes: Sequence[Shape],
    results: dict[tuple[int, str], list[Measurement]],
    appends: dict[int, list[Distribution]],
    writes: dict[int, list[tuple[float, float]]],
) -> Table:
    """Where genstream's delivery time goes: the durable append itself (its COMMIT waits for
    the WAL to reach the disk: the part no stream path can take away), and the stream path
    alone, from the commit's notification to the frame's write, measured inside ``serve``
    (``genstream_stream_write_lag_seconds``, interpolated within its buckets)."""
    table = Table(
        "genstream: the append alone (start -> COMMIT returned), the stream path alone "
        "(notification -> frame written, server side) and delivery, same events (median "
        "(min-max) over repetitions)",
        [
            "shape",
            "append p50 ms",
            "append p99 ms",
            "stream path p50 ms",
            "stream path p99 ms",
            "delivery p50 ms",
            "delivery p99 ms",
        ],
    )
    for index, shape in enumerate(shapes):
        distributions, written = appends.get(index, []), writes.get(index, [])
        delivered = results[(index, "genstream")]
        table.add(
            shape.label,
            *(fmt_summary(Summary.of([d.p50 for d in distributions])),
              fmt_summary(Summary.of([d.p99 for d in distributions])))
            if distributions else ("-", "-"),
            fmt_summary(Summary.of([p50 for p50, _ in written])),
            fmt_summary(Summary.of([p99 for _, p99 in written])),
            fmt_summary(summary(delivered, "p50_ms")),
            fmt_summary(summary(delivered, "p99_ms")),
        )  # fmt: skip
    return table


def _targets_table(
    shapes: Sequence[Shape],
    results: dict[tuple[int, str], list[Measurement]],
    writes: dict[int, list[tuple[float, float]]],
) -> Table:
    """The delivery targets (p99 per shape, sends/s per process, p50 against polling), each
    where this run has the shape for it; reported as met or missed, never asserted."""
    table = Table("Delivery targets (medians)", ["target", "measured", "met"])

    def find(kind: str, streams: int, rate: float | None = None) -> int | None:
        for index, shape in enumerate(shapes):
            if shape.kind == kind and shape.streams == streams and rate in (None, shape.rate):
                return index
        return None

    checks: list[tuple[str, int | None, str, Callable[[float], bool]]] = [
        ("p99 < 5 ms, 100 streams @ 1,000 ev/s", find("spread", 100, 1000), "p99_ms",
         lambda v: v < 5),
        ("p99 < 10 ms, 1,000 streams @ 1,000 ev/s", find("spread", 1000, 1000), "p99_ms",
         lambda v: v < 10),
        ("p99 < 50 ms, 1,000 streams on one generation", find("fanout", 1000), "p99_ms",
         lambda v: v < 50),
        ("event-sends/s >= 20,000 per process (saturate)", find("saturate", 100), "sends_per_s",
         lambda v: v >= 20_000),
    ]  # fmt: skip
    for label, index, metric, ok in checks:
        if index is None:
            continue
        value = summary(results[(index, "genstream")], metric).median
        table.add(label, fmt_summary(Summary.of([value])), "yes" if ok(value) else "NO")
    spread = find("spread", 1000, 1000)
    if spread is not None and writes.get(spread):
        p99 = Summary.of([p99 for _, p99 in writes[spread]]).median
        table.add(
            "stream path p99 <= 2 ms (notification -> written), 1,000 streams @ 1,000 ev/s",
            fmt_summary(Summary.of([p99])),
            "yes" if p99 <= 2 else "NO",
        )
    saturate = find("saturate", 100)
    if saturate is not None:
        # Independent of whether the appends or the client kept up: sends per CPU-second.
        per_cpu_s = 1e6 / summary(results[(saturate, "genstream")], "server_cpu_us_per_send").median
        table.add(
            "event-sends per serve CPU-second >= 20,000 (saturate)",
            fmt_summary(Summary.of([per_cpu_s])),
            "yes" if per_cpu_s >= 20_000 else "NO",
        )
    for index, shape in enumerate(shapes):
        if shape.kind == "saturate":
            continue
        better = ratio(
            _metric(results[(index, "polling")], "p50_ms"),
            _metric(results[(index, "genstream")], "p50_ms"),
        ).median
        table.add(
            f"p50 >= 50x better than polling: {shape.label}",
            f"{fmt_summary(Summary.of([better]))}x",
            "yes" if better >= 50 else "NO",
        )
    return table


async def _idle_memory(
    ctx: Context, streams: int, pool: Pool, claims: list[Claimed], writers: list[LogEmitter]
) -> dict[str, float]:
    """KiB per idle stream of each server, each freshly started."""
    shape = Shape("spread", streams, 0, 0)
    memory: dict[str, float] = {}
    for name in NAMES:
        target: GenstreamTarget | ReferenceTarget
        if name == "genstream":
            target = await GenstreamTarget.start(
                ctx.database_url, ctx.work_dir, pool, claims, writers
            )
        else:
            module = CEILING if name == "ceiling" else POLLING
            target = await ReferenceTarget.start(f"{name}-idle", module, ctx.work_dir)
        try:
            paths = await target.stream_paths(shape)
            memory[name] = await idle_memory_kib_per_stream(target, paths)
        finally:
            await target.stop()
    return memory


async def _measure_shapes(
    ctx: Context,
    shapes: Sequence[Shape],
    pool: Pool,
    claims: list[Claimed],
    writers: list[LogEmitter],
    results: dict[tuple[int, str], list[Measurement]],
    appends: dict[int, list[Distribution]],
    writes: dict[int, list[tuple[float, float]]],
) -> None:
    """Every shape against the three servers, interleaved, the order rotating per repetition:
    delivery, and genstream's appends alone and its stream path alone (from serve's metrics)."""
    warm_s, drain_s = load_timing(ctx.quick)
    targets: list[Target] = []
    try:
        targets.append(await ReferenceTarget.start("ceiling", CEILING, ctx.work_dir))
        genstream = await GenstreamTarget.start(
            ctx.database_url, ctx.work_dir, pool, claims, writers
        )
        targets.append(genstream)
        targets.append(await ReferenceTarget.start("polling", POLLING, ctx.work_dir))
        for rep in ctx.reps():
            for index, shape in enumerate(shapes):
                shift = rep % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    genstream.append_ns.clear()
                    scraped = await genstream.serve.buckets(WRITE_LAG)
                    m = await measure(target, shape, warm_s=warm_s, drain_s=drain_s)
                    results.setdefault((index, target.name), []).append(m)
                    if target is not genstream:
                        continue
                    writes.setdefault(index, []).append(
                        _stream_path_ms(scraped, await genstream.serve.buckets(WRITE_LAG))
                    )
                    if not shape.closed_loop:
                        appends.setdefault(index, []).append(
                            Distribution.of_ns(genstream.append_ns)
                        )
    finally:
        for target in targets:
            await target.stop()


async def run(ctx: Context) -> Outcome:
    shapes = load_shapes(ctx.quick)
    warm_s, drain_s = load_timing(ctx.quick)
    idle = idle_streams(ctx.quick)
    outcome = Outcome(
        parameters={
            "shapes": [shape.as_json() for shape in shapes],
            "warm_s": warm_s,
            "drain_s": drain_s,
            "idle_streams": idle,
            "genstream": "serve subprocess, worker off, default settings (pool 10)",
            "appends": "LogEmitter.emit through an Appender (group commit, as a worker's "
            "runs), with fence and keys, 8 in flight",
        }
    )
    pool = await bench_pool(ctx.database_url)
    results: dict[tuple[int, str], list[Measurement]] = {}
    appends: dict[int, list[Distribution]] = {}
    writes: dict[int, list[tuple[float, float]]] = {}  # stream path p50, p99 ms per repetition
    memory: dict[str, list[float]] = {name: [] for name in NAMES}
    try:
        claims = await claimed_generations(pool, max(idle, *(shape.channels for shape in shapes)))
        async with worker_writers(pool, claims) as writers:
            await _measure_shapes(ctx, shapes, pool, claims, writers, results, appends, writes)
            for _ in ctx.reps():
                measured = await _idle_memory(ctx, idle, pool, claims, writers)
                for name, kib_per_stream in measured.items():
                    memory[name].append(kib_per_stream)
            await finish(writers)
    finally:
        await pool.close()

    table = Table(
        "Delivery: start of append/publish -> client has it (median (min-max) over repetitions)",
        ["shape", "server", *LATENCY_COLUMNS],
    )
    ratios = Table(
        "Delivery ratios (per repetition, then median (min-max))",
        [
            "shape",
            "genstream/ceiling p50",
            "genstream/ceiling p99",
            "polling/genstream p50",
            "genstream/ceiling sends/s",
            "genstream/ceiling CPU/send",
        ],
    )
    for index, shape in enumerate(shapes):
        for name in NAMES:
            table.add(shape.label, name, *latency_cells(shape, results[(index, name)]))
            outcome.rows.append(measurement_row(shape, name, results[(index, name)]))
        g, c, p = (results[(index, name)] for name in ("genstream", "ceiling", "polling"))
        p50 = ratio(_metric(g, "p50_ms"), _metric(c, "p50_ms"))
        p99 = ratio(_metric(g, "p99_ms"), _metric(c, "p99_ms"))
        better = ratio(_metric(p, "p50_ms"), _metric(g, "p50_ms"))
        sends = ratio(_metric(g, "sends_per_s"), _metric(c, "sends_per_s"))
        cpu = ratio(_metric(g, "server_cpu_us_per_send"), _metric(c, "server_cpu_us_per_send"))
        latency_ratios = ("-", "-", "-") if shape.kind == "saturate" else (
            fmt_summary(p50), fmt_summary(p99), fmt_summary(better)
        )  # fmt: skip
        ratios.add(shape.label, *latency_ratios, fmt_summary(sends), fmt_summary(cpu))
        outcome.rows.append(
            row(
                {"ratios": True, **shape.as_json()},
                ratio_genstream_to_ceiling_p50=p50,
                ratio_genstream_to_ceiling_p99=p99,
                ratio_polling_to_genstream_p50=better,
                ratio_genstream_to_ceiling_sends_per_s=sends,
                cpu_per_send_genstream_to_ceiling=cpu,
            )
        )
    outcome.tables += [table, ratios, _appends_table(shapes, results, appends, writes)]
    outcome.tables.append(_targets_table(shapes, results, writes))
    for index, written in writes.items():
        outcome.rows.append(
            row(
                {"stream_path": True, **shapes[index].as_json()},
                stream_path_p50_ms=Summary.of([p50 for p50, _ in written]),
                stream_path_p99_ms=Summary.of([p99 for _, p99 in written]),
            )
        )
    for index, distributions in appends.items():
        outcome.rows.append(
            row(
                {"append_alone": True, **shapes[index].as_json()},
                append_p50_ms=Summary.of([d.p50 for d in distributions]),
                append_p99_ms=Summary.of([d.p99 for d in distributions]),
            )
        )

    memory_table = Table(
        f"Resident memory per idle stream ({idle:,} streams, fresh processes)",
        ["server", "KiB/stream", "vs ceiling"],
    )
    for name in NAMES:
        kib = Summary.of(memory[name])
        relative = ratio(memory[name], memory["ceiling"])
        memory_table.add(name, fmt_summary(kib), fmt_summary(relative))
        outcome.rows.append(
            row(
                {"target": name, "idle_streams": idle},
                kib_per_idle_stream=kib,
                memory_vs_ceiling=relative,
            )
        )
    outcome.tables.append(memory_table)
    outcome.notes.append(
        "undelivered = events not received within drain_s after the last publish "
        "(late or lost); latencies cover the events that did arrive."
    )
    return outcome
