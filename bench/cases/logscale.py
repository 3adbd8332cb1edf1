"""Case 11: the log on the way up, 10^5 -> 10^6 -> 10^7 events (not in the default run).

For each size, cumulatively (the log grows from one size to the next, never refilled):

1. fill by binary COPY (``bench/logfill.py``) with runs made up as real ones look
   (``bench/logruns.py``: many owners, months of ``created_at``, growing ``tx_id``), indexes
   in place; the fill's rate and WAL per event;
2. ``VACUUM ANALYZE`` the log's tables, as autovacuum would have by then (hint bits, the
   visibility map, statistics), so no measurement pays for the fill;
3. measure (``bench/logsize.py``): append throughput through ``event_log.append``; stream
   open and catch-up of whole runs with the SSE path's reads; a global-feed page and an
   owner-feed page at random positions; every analytics view and the stats query; table and
   index bytes per event, of each partition (the fill makes the monthly partitions its runs
   need first: each run lands in its month's, as in production);
4. at the largest size only, last: a retention pass, dry and real (``bench/logretention.py``).

Then a summary across sizes: what should stay flat (append, open, catch-up, feed pages) and
what grows with the log (the analytics views scan it all).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from bench import logfill, logretention, logsize
from bench.core import Context, Outcome, Summary, Table, fmt_number, fmt_summary, row
from bench.logruns import Runs
from service.store.db import asyncpg_dsn, connection, create_pool

SIZES = (100_000, 1_000_000, 10_000_000)
QUICK_SIZES = (2_000, 4_000)
QUICK_RUN_EVENTS = (100, 300)
APPEND_WRITERS = 4
APPEND_BATCH = 10
SAMPLES = 20  # runs opened, feed pages read, per repetition
FLAT = ("append", "open", "catch-up", "global feed", "owner feed (heavy)", "owner feed (light)")
SELECT_LOGGED = "SELECT coalesce(sum(last_seq), 0)::bigint FROM generations"


def _ms(values: Sequence[float]) -> Summary:
    return Summary.of(sorted(values))


class Measured:
    """The figures of one size: name -> (display unit, summary), in the order measured."""

    def __init__(self) -> None:
        self.figures: dict[str, tuple[str, Summary]] = {}

    def add(self, name: str, unit: str, values: Sequence[float]) -> None:
        self.figures[name] = (unit, Summary.of(list(values)))


async def _measure(ctx: Context, size: int, owners: tuple[str, str], runs: Runs) -> Measured:
    measured = Measured()
    rng = random.Random(size)
    seconds = 0.2 if ctx.quick else 3.0
    samples = 3 if ctx.quick else SAMPLES
    pool = await create_pool(ctx.database_url, min_size=2, max_size=APPEND_WRITERS + 1)
    try:
        async with connection(pool) as conn:
            made = list(runs.made)
            opens: list[float] = []
            catch_ups: list[float] = []
            rates: list[float] = []
            await logsize.stream_read(conn, made[0][0])  # unmeasured: prepares the statements
            for _ in ctx.reps():
                for generation_id, _owner, _last in rng.sample(made, min(samples, len(made))):
                    read = await logsize.stream_read(conn, generation_id)
                    opens.append(read.open_ms)
                    catch_ups.append(read.catch_up_ms)
                    rates.append(read.events / read.catch_up_ms * 1e3)
            measured.add("open", "ms", opens)
            measured.add("catch-up", "ms", catch_ups)
            measured.add("catch-up rate", "events/s", rates)
            for name, owner in (("global feed", None), *zip(("owner feed (heavy)",
                                "owner feed (light)"), owners, strict=True)):  # fmt: skip
                pages: list[float] = []
                at = await logsize.feed_position(conn, rng)  # unmeasured, as above
                if owner is None:
                    await logsize.global_feed_page(conn, at)
                else:
                    await logsize.owner_feed_page(conn, owner, at)
                for _ in range(samples * ctx.repeat):
                    at = await logsize.feed_position(conn, rng)
                    if owner is None:
                        ms, _rows = await logsize.global_feed_page(conn, at)
                    else:
                        ms, _rows = await logsize.owner_feed_page(conn, owner, at)
                    pages.append(ms)
                measured.add(name, "ms", pages)
            for view in await logsize.analytics_views(conn):
                measured.add(
                    f"view {view}",
                    "ms",
                    [(await logsize.read_view(conn, view))[0] for _ in ctx.reps()],
                )
            for label, owner in zip(("stats (heavy owner)", "stats (light owner)"), owners,
                                    strict=True):  # fmt: skip
                measured.add(label, "ms", [await logsize.stats(conn, owner) for _ in ctx.reps()])
        # Last: its appends grow the log, and the reads above measured it at the size filled.
        bursts = [
            await logsize.append_burst(pool, APPEND_WRITERS, APPEND_BATCH, seconds)
            for _ in ctx.reps()
        ]
        measured.add("append", "events/s", [b.events_per_s for b in bursts])
        measured.add("append WAL", "B/event", [b.wal_per_event for b in bursts])
    finally:
        await pool.close()
    return measured


def _share(runs: Runs, owner: str) -> float:
    events = sum(last for _, who, last in runs.made if who == owner)
    return events / max(1, sum(last for _, _, last in runs.made))


def _owners(runs: Runs) -> tuple[str, str]:
    """The owner with the most runs, and one with few (the median of those seen)."""
    ranked = sorted(runs.owners_seen.items(), key=lambda item: (-item[1], item[0]))
    return ranked[0][0], ranked[len(ranked) // 2][0]


async def run(ctx: Context) -> Outcome:
    sizes = tuple(sorted(ctx.sizes or (QUICK_SIZES if ctx.quick else SIZES)))
    runs = Runs(max(sizes), run_events=QUICK_RUN_EVENTS if ctx.quick else (1_000, 3_000))
    outcome = Outcome(
        parameters={
            "sizes": sizes,
            "run_events": runs.run_events,
            "append": {"writers": APPEND_WRITERS, "batch": APPEND_BATCH},
            "stream_page": logsize.STREAM_PAGE,
            "feed_page": logsize.FEED_PAGE,
            "fill": "binary COPY (asyncpg copy_records_to_table), indexes in place",
            "partitions": f"{logfill.PERIOD}ly, made before each fill for its runs' months",
            "retention": {
                "at": max(sizes),
                "redact_after_days": logretention.policy(runs.start).redact_after_days,
                "drop_after_days": logretention.policy(runs.start).drop_after_days,
            },
        }
    )
    conn = await asyncpg.connect(asyncpg_dsn(ctx.database_url))
    by_size: dict[int, Measured] = {}
    owners: tuple[str, str] | None = None
    try:
        for size in sizes:
            # The size counts the made-up events only: the appends measured at a size stay in
            # the log, but at --quick sizes they would be most of the next size.
            fill = await logfill.fill(conn, runs, max(0, size - runs.filled), rebuild_indexes=False)
            logged = int(await conn.fetchval(SELECT_LOGGED))
            vacuum = await _vacuum_analyze(conn)
            owners = owners or _owners(runs)  # chosen at the first size, then kept
            measured = await _measure(ctx, size, owners, runs)
            # The sizes after the measurements, over every event stored by then (the appends'
            # too): bytes per event of what is on disk.
            stored = int(await conn.fetchval(SELECT_LOGGED))
            relations, indexes = await logsize.relation_sizes(conn)
            by_size[size] = measured
            table = Table(
                f"The log at {size:,} events ({logged:,} stored when read; owners "
                f"{owners[0]} and {owners[1]})",
                ["measurement", "value"],
            )
            fill_rate = fill.events_per_s
            table.add(
                "fill (binary COPY, indexes in place)",
                f"{fmt_number(fill_rate)} events/s ({fill.events:,} events, {fill.runs:,} runs, "
                f"{fill.seconds:.1f} s incl. {fill.xid_burn_s:.1f} s of xid burn)",
            )
            table.add("fill WAL", f"{fmt_number(fill.wal_bytes / max(fill.events, 1))} B/event")
            table.add(
                "partitions",
                f"{_periods(fill.partitions_made)} made by this fill; generation_events has "
                f"{_periods(r.relation for r in relations)} monthly partitions and its DEFAULT "
                f"holds "
                f"{await logsize.default_rows(conn):,} events",
            )
            table.add("VACUUM ANALYZE after the fill", f"{vacuum:.1f} s")
            shares = [_share(runs, owner) for owner in owners]
            table.add(
                "owners' shares of the filled events",
                f"{owners[0]} (heavy) {shares[0]:.2%}, {owners[1]} (light) {shares[1]:.2%}; "
                f"{len(runs.owners_seen)} owners, {len(runs.made):,} runs",
            )
            for name, (unit, summary) in measured.figures.items():
                table.add(name, f"{fmt_summary(summary)} {unit}")
            for relation in relations:
                per = relation.total_bytes / stored
                table.add(
                    f"size {relation.relation}",
                    f"{relation.total_bytes / 2**20:,.1f} MiB = {fmt_number(per)} B/event "
                    f"(table {fmt_number(relation.table_bytes / stored)}, indexes "
                    f"{fmt_number(relation.index_bytes / stored)}; {stored:,} events); its "
                    f"{relation.rows:,} rows, {_per_row(relation)} B/row",
                )
            for index, bytes_ in indexes:
                table.add(f"index {index}", f"{fmt_number(bytes_ / stored)} B/event")
            outcome.tables.append(table)
            outcome.rows.append(
                row(
                    {"size": size, "measure": "fill"},
                    events=fill.events,
                    runs=fill.runs,
                    files=fill.files,
                    seconds=fill.seconds,
                    events_per_s=fill_rate,
                    wal_bytes_per_event=fill.wal_bytes / max(fill.events, 1),
                    xid_burn_s=fill.xid_burn_s,
                    vacuum_analyze_s=vacuum,
                    heavy_owner_share=shares[0],
                    light_owner_share=shares[1],
                    stored_events=logged,
                    partitions_made=_periods(fill.partitions_made),
                )
            )
            for name, (unit, summary) in measured.figures.items():
                outcome.rows.append(
                    row({"size": size, "measure": name, "unit": unit}, value=summary)
                )
            outcome.rows.append(
                row(
                    {"size": size, "measure": "sizes"},
                    stored_events=stored,
                    **_size_metrics(relations, indexes, stored),
                )
            )
            if size == sizes[-1]:  # last: the pass changes the log (see logretention.py)
                pool = await create_pool(ctx.database_url, min_size=1, max_size=2)
                try:
                    reads = 3 if ctx.quick else SAMPLES // 2
                    retention = await logretention.measure(pool, runs, stored, reads)
                finally:
                    await pool.close()
                outcome.tables.append(logretention.table(size, retention))
                outcome.rows.extend(logretention.rows(size, retention))
    finally:
        await conn.close()
    outcome.tables.append(_summary(by_size))
    outcome.notes.extend(_curve_notes(by_size))
    return outcome


def _per_row(relation: logsize.RelationSize) -> str:
    if not relation.rows:
        return "n/a"
    return f"{fmt_number(relation.total_bytes / relation.rows)} (table " + (
        f"{fmt_number(relation.table_bytes / relation.rows)}, indexes "
        f"{fmt_number(relation.index_bytes / relation.rows)})"
    )


def _periods(names: Iterable[str]) -> int:
    """How many of ``names`` are period partitions of ``generation_events``."""
    return sum(name.startswith("generation_events_p") for name in names)


def _size_metrics(
    relations: list[logsize.RelationSize], indexes: list[tuple[str, int]], logged: int
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for relation in relations:
        metrics[f"{relation.relation}_total_bytes"] = relation.total_bytes
        metrics[f"{relation.relation}_table_bytes"] = relation.table_bytes
        metrics[f"{relation.relation}_index_bytes"] = relation.index_bytes
        metrics[f"{relation.relation}_rows"] = relation.rows
    for index, bytes_ in indexes:
        metrics[f"index_{index}_bytes"] = bytes_
    metrics["total_bytes_per_event"] = sum(r.total_bytes for r in relations) / logged
    return metrics


async def _vacuum_analyze(conn: asyncpg.Connection) -> float:
    started = time.perf_counter()
    for table in logsize.LOG_TABLES:
        await conn.execute(f"VACUUM (ANALYZE) {table}")
    return time.perf_counter() - started


def _summary(by_size: dict[int, Measured]) -> Table:
    sizes = list(by_size)
    columns = ["measurement", *(f"{size:,}" for size in sizes)]
    if len(sizes) > 1:
        columns.append(f"last / first ({sizes[-1] // sizes[0]:,}x the events)")
    table = Table("The curve: medians at each size", columns)
    for name, (unit, _) in by_size[sizes[0]].figures.items():
        medians = [by_size[size].figures[name][1].median for size in sizes]
        cells = [f"{fmt_number(m)} {unit}" for m in medians]
        if len(sizes) > 1:
            cells.append(f"{fmt_number(medians[-1] / medians[0])}x" if medians[0] else "n/a")
        table.add(name + (" (should be flat)" if name in FLAT else ""), *cells)
    return table


def _curve_notes(by_size: dict[int, Measured]) -> list[str]:
    sizes = list(by_size)
    if len(sizes) < 2:
        return []
    notes = []
    first, last = by_size[sizes[0]].figures, by_size[sizes[-1]].figures
    for name in FLAT:
        before, after = first[name][1].median, last[name][1].median
        growth = after / before if before else float("nan")
        # Throughput should not fall, times should not rise, beyond noise (x2 either way).
        flat = growth > 0.5 if name == "append" else growth < 2.0
        notes.append(
            f"{name}: {fmt_number(growth)}x from {sizes[0]:,} to {sizes[-1]:,} events: "
            + ("flat" if flat else "NOT flat")
        )
    return notes
