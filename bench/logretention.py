"""Case 11's retention pass: what ``service.operations.retention.apply`` costs on a filled log.

Measured once, at the largest size, after everything else there (a real pass changes the log:
measured earlier, it would change what the next size starts from). The policy is set from the
fill's timeline (``bench/logruns.py``: the runs start over ``SPAN``, ending at the fill's
"now"), so that it drops the oldest, partial month of the filled runs (a whole partition) and
redacts the next ``REDACT_SHARE``. In order:

1. the log's bytes (heap and indexes of each table, every partition summed);
2. a dry run (``dry_run=True``): its time and WAL, and the bytes after it (it only reads and
   counts: no WAL of its own, no dead rows);
3. the real pass: time, WAL (``pg_current_wal_lsn()`` before and after), bytes after;
4. ``VACUUM`` of the log's tables, its time and the bytes after (space made reusable, not
   given back);
5. reads after the pass: stream open and catch-up of redacted and of untouched runs, and
   global-feed pages.

Only ``apply`` is called and only ``Report``'s fields are read: how the pass drops (runs in
batches, or whole partitions) is the service's business.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from bench import logsize
from bench.core import Summary, Table, fmt_number, fmt_summary, row
from bench.logruns import SPAN, Runs
from service.operations.retention import Policy, Report, apply
from service.store import partitions
from service.store.db import Connection, Pool, connection

REDACT_SHARE = 0.20  # the next: redacted
TABLES = ("generation_events", "generated_files")

# Runs of the fill still there, redacted or not ($1), at random.
SELECT_RUNS = """
SELECT id
FROM generations
WHERE (redacted_at IS NOT NULL) = $1
  AND status IN ('succeeded', 'failed', 'cancelled')
ORDER BY random()
LIMIT $2
"""


def policy(start: datetime) -> Policy:
    """Drop what finished more than a day into the first month boundary after ``start`` (the
    oldest, partial month of the fill: a whole partition, the path a real deployment takes
    once a month), and redact the next ``REDACT_SHARE`` of the timeline."""
    now = start + SPAN
    boundary = partitions.next_period("month", partitions.period_start("month", start))
    drop_days = round((now - boundary - timedelta(days=1)) / timedelta(days=1), 3)
    return Policy(
        redact_after_days=round(drop_days - REDACT_SHARE * SPAN / timedelta(days=1), 3),
        drop_after_days=drop_days,
    )


@dataclass(frozen=True, slots=True)
class LogBytes:
    """The heap (with TOAST) and index bytes of each of ``TABLES``, partitions summed."""

    heap: dict[str, int]
    indexes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.heap.values()) + sum(self.indexes.values())


async def log_bytes(conn: Connection) -> LogBytes:
    relations, _ = await logsize.relation_sizes(conn)
    heap = dict.fromkeys(TABLES, 0)
    indexes = dict.fromkeys(TABLES, 0)
    for relation in relations:
        table = next((t for t in TABLES if relation.relation.startswith(t)), None)
        if table is not None:
            heap[table] += relation.table_bytes
            indexes[table] += relation.index_bytes
    return LogBytes(heap, indexes)


@dataclass(frozen=True, slots=True)
class Pass:
    report: Report
    seconds: float
    wal_bytes: int
    after: LogBytes


async def one_pass(pool: Pool, runs: Runs, chosen: Policy, *, dry_run: bool) -> Pass:
    """One ``apply`` at ``chosen`` as of the fill's "now"; its time, WAL and the bytes after."""
    async with connection(pool) as conn:
        wal_before = await conn.fetchval("SELECT pg_current_wal_lsn()")
    started = time.perf_counter()
    report = await apply(pool, chosen, now=runs.start + SPAN, dry_run=dry_run)
    seconds = time.perf_counter() - started
    async with connection(pool) as conn:
        wal = await conn.fetchval("SELECT pg_current_wal_lsn() - $1::pg_lsn", wal_before)
        after = await log_bytes(conn)
    return Pass(report, seconds, int(wal), after)


@dataclass(slots=True)
class Retention:
    policy: Policy
    stored: int  # events stored before the pass
    before: LogBytes
    dry: Pass
    real: Pass
    vacuum_s: float
    vacuumed: LogBytes
    reads: dict[str, list[float]] = field(default_factory=dict)  # name -> ms


async def measure(pool: Pool, runs: Runs, stored: int, samples: int) -> Retention:
    """Steps 1-5 of the module's docstring."""
    async with connection(pool) as conn:
        before = await log_bytes(conn)
    chosen = policy(runs.start)
    dry = await one_pass(pool, runs, chosen, dry_run=True)
    real = await one_pass(pool, runs, chosen, dry_run=False)
    async with connection(pool) as conn:
        started = time.perf_counter()
        for table in logsize.LOG_TABLES:
            await conn.execute(f"VACUUM {table}")
        vacuum_s = time.perf_counter() - started
        vacuumed = await log_bytes(conn)
        measured = Retention(chosen, stored, before, dry, real, vacuum_s, vacuumed)
        rng = random.Random(stored)
        for redacted in (True, False):
            kind = "redacted" if redacted else "untouched"
            for record in await conn.fetch(SELECT_RUNS, redacted, samples):
                read = await logsize.stream_read(conn, record["id"])
                measured.reads.setdefault(f"open, {kind} run", []).append(read.open_ms)
                measured.reads.setdefault(f"catch-up, {kind} run", []).append(read.catch_up_ms)
        for _ in range(samples):
            ms, _rows = await logsize.global_feed_page(conn, await logsize.feed_position(conn, rng))
            measured.reads.setdefault("global feed", []).append(ms)
    return measured


def _bytes(log: LogBytes, stored: int) -> str:
    events = "generation_events"
    return (
        f"{log.total / 2**20:,.1f} MiB; generation_events heap "
        f"{fmt_number(log.heap[events] / stored)} + indexes "
        f"{fmt_number(log.indexes[events] / stored)} B/event, generated_files "
        f"{log.heap['generated_files'] / 2**20:,.1f} MiB"
    )


def _counts(report: Report) -> str:
    partitions = ", ".join(report.dropped_partitions) or "none"
    return (
        f"dropped {report.dropped_generations:,} runs / {report.dropped_events:,} events "
        f"(partitions: {partitions}); redacted {report.redacted_generations:,} runs / "
        f"{report.redacted_events:,} events / {report.redacted_files:,} files, "
        f"{report.chars_removed / 1e6:,.1f} M characters"
    )


def table(size: int, measured: Retention) -> Table:
    chosen = measured.policy
    result = Table(
        f"Retention at {size:,} events: redact after {chosen.redact_after_days:g} days, drop "
        f"after {chosen.drop_after_days:g} (runs start over {SPAN.days} days)",
        ["measurement", "value"],
    )
    stored = measured.stored
    result.add("log before", _bytes(measured.before, stored))
    for name, done in (("dry run", measured.dry), ("real pass", measured.real)):
        share = done.report.dropped_events / stored, done.report.redacted_events / stored
        result.add(
            name,
            f"{done.seconds:.1f} s; {_counts(done.report)}; {share[0]:.1%} of events dropped, "
            f"{share[1]:.1%} redacted",
        )
        result.add(
            f"{name} WAL",
            f"{done.wal_bytes / 2**20:,.1f} MiB = {fmt_number(done.wal_bytes / stored)} B per "
            f"stored event",
        )
        result.add(f"log after the {name}", _bytes(done.after, stored))
    result.add(f"VACUUM of {', '.join(logsize.LOG_TABLES)}", f"{measured.vacuum_s:.1f} s")
    result.add("log after VACUUM", _bytes(measured.vacuumed, stored))
    for name, values in measured.reads.items():
        result.add(f"after the pass: {name}", f"{fmt_summary(Summary.of(values))} ms")
    return result


def rows(size: int, measured: Retention) -> list[dict[str, object]]:
    chosen = measured.policy
    out = [
        row(
            {"size": size, "measure": "retention pass"},
            redact_after_days=chosen.redact_after_days or 0.0,
            drop_after_days=chosen.drop_after_days or 0.0,
            stored_events=measured.stored,
            bytes_before=measured.before.total,
            bytes_after_vacuum=measured.vacuumed.total,
            vacuum_s=measured.vacuum_s,
        )
    ]
    for name, done in (("dry run", measured.dry), ("real", measured.real)):
        report = done.report
        out.append(
            row(
                {"size": size, "measure": f"retention {name}"},
                seconds=done.seconds,
                wal_bytes=done.wal_bytes,
                bytes_after=done.after.total,
                dropped_generations=report.dropped_generations,
                dropped_events=report.dropped_events,
                dropped_partitions=len(report.dropped_partitions),
                redacted_generations=report.redacted_generations,
                redacted_events=report.redacted_events,
                redacted_files=report.redacted_files,
                chars_removed=report.chars_removed,
            )
        )
    for name, values in measured.reads.items():
        out.append(
            row(
                {"size": size, "measure": f"after retention: {name}", "unit": "ms"},
                value=Summary.of(values),
            )
        )
    return out
