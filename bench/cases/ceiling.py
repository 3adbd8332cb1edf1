"""Case 7: the SSE ceiling, a minimal in-memory fan-out (``bench/ceiling_server.py``) under the
load shapes of case 2, plus its resident memory per idle stream."""

from __future__ import annotations

from bench.cases.streaming import LATENCY_COLUMNS, latency_cells, measurement_row
from bench.core import Context, Outcome, Summary, Table, fmt_summary, row
from bench.load import Measurement, idle_memory_kib_per_stream, idle_streams, load_shapes, measure
from bench.load import timing as load_timing
from bench.targets import ReferenceTarget

MODULE = "bench.ceiling_server"


async def idle_memory(ctx: Context, streams: int) -> float:
    """On a freshly started server, so earlier streams' memory is not reused and hidden."""
    target = await ReferenceTarget.start("ceiling-idle", MODULE, ctx.work_dir)
    try:
        paths = [f"/stream?channel={k}" for k in range(streams)]
        return await idle_memory_kib_per_stream(target, paths)
    finally:
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
        }
    )
    results: dict[int, list[Measurement]] = {}
    memory: list[float] = []
    target = await ReferenceTarget.start("ceiling", MODULE, ctx.work_dir)
    try:
        for _ in ctx.reps():
            for index, shape in enumerate(shapes):
                m = await measure(target, shape, warm_s=warm_s, drain_s=drain_s)
                results.setdefault(index, []).append(m)
    finally:
        await target.stop()
    for _ in ctx.reps():
        memory.append(await idle_memory(ctx, idle))

    table = Table(
        "SSE ceiling: in-memory fan-out, publish start -> client has it "
        "(median (min-max) over repetitions)",
        ["shape", *LATENCY_COLUMNS],
    )
    for index, shape in enumerate(shapes):
        table.add(shape.label, *latency_cells(shape, results[index]))
        outcome.rows.append(measurement_row(shape, "ceiling", results[index]))
    outcome.tables.append(table)
    kib = Summary.of(memory)
    memory_table = Table("SSE ceiling: resident memory per idle stream", ["streams", "KiB/stream"])
    memory_table.add(f"{idle:,}", fmt_summary(kib))
    outcome.tables.append(memory_table)
    outcome.rows.append(row({"target": "ceiling", "idle_streams": idle}, kib_per_idle_stream=kib))
    outcome.notes.append(
        "sends/s in the saturate row is bounded by the load client too: it shares the cores "
        "with the server; server CPU µs/send is the figure that does not depend on that."
    )
    return outcome
