"""What every case shares: summaries over repetitions, percentiles, tables, results on disk."""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
DEFAULT_RESULTS_DIR = BENCH_DIR / "results"


@dataclass(frozen=True, slots=True)
class Summary:
    """One figure over the repetitions of a measurement."""

    min: float
    median: float
    max: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            raise ValueError("a summary needs at least one value")
        return cls(min(values), statistics.median(values), max(values), tuple(values))

    def as_json(self) -> dict[str, Any]:
        return {"min": self.min, "median": self.median, "max": self.max, "values": self.values}


def ratio(numerators: Sequence[float], denominators: Sequence[float]) -> Summary:
    """Per-repetition ratios (repetition i over repetition i), then summarised."""
    pairs = [(a, b) for a, b in zip(numerators, denominators, strict=True) if b > 0]
    if not pairs:
        return Summary.of([math.nan])
    return Summary.of([a / b for a, b in pairs])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def bucket_quantile(
    before: Sequence[tuple[float, float]], after: Sequence[tuple[float, float]], q: float
) -> float:
    """The q-quantile (0..1) of what a histogram counted between two scrapes (cumulative
    (bound, count) buckets, +Inf last), interpolated within its bucket as Prometheus'
    ``histogram_quantile`` does; past the last finite bound, that bound. NaN when nothing."""
    counts = [a - b for (_, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1]
    if total <= 0:
        return math.nan
    rank = q * total
    lower, below = 0.0, 0.0
    for (bound, _), cumulative in zip(after, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, cumulative
    return lower


@dataclass(frozen=True, slots=True)
class Distribution:
    """Latencies of one repetition, in milliseconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of_ns(cls, latencies_ns: Sequence[int]) -> Distribution:
        values = sorted(value / 1e6 for value in latencies_ns)
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(values),
            percentile(values, 50),
            percentile(values, 95),
            percentile(values, 99),
            values[-1],
        )


def fmt_number(value: float, digits: int = 3) -> str:
    """Compact: 3 significant digits below 1000, thousands separators above."""
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 999.5:
        return f"{value:,.0f}"
    if value == 0:
        return "0"
    text = f"{value:#.{digits}g}".rstrip(".")  # '#' keeps 1.00; rstrip turns '100.' to '100'
    return f"{value:.2e}" if "e" in text else text


def fmt_summary(summary: Summary, suffix: str = "") -> str:
    """``median (min-max)``; a single repetition shows just its value."""
    if len(summary.values) == 1 or summary.min == summary.max:
        return f"{fmt_number(summary.median)}{suffix}"
    return (
        f"{fmt_number(summary.median)}{suffix} "
        f"({fmt_number(summary.min)}-{fmt_number(summary.max)})"
    )


@dataclass(slots=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: str) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def render(self) -> str:
        """A Markdown table, padded so that it also reads well in a terminal."""
        widths = [len(column) for column in self.columns]
        for row in self.rows:
            widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

        def line(cells: Sequence[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
        body = [line(row) for row in self.rows]
        return "\n".join([f"**{self.title}**", "", line(self.columns), rule, *body])


@dataclass(slots=True)
class Outcome:
    """What a case hands back: tables to print and rows to keep as JSON."""

    status: str = "ok"  # ok | skipped | failed | not implemented
    reason: str | None = None
    tables: list[Table] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


def row(params: dict[str, Any], **metrics: Summary | float | int | str) -> dict[str, Any]:
    """One JSON result row: what was measured (params) and what came out (metrics)."""
    return {
        "params": params,
        "metrics": {
            name: value.as_json() if isinstance(value, Summary) else value
            for name, value in metrics.items()
        },
    }


@dataclass(slots=True)
class Context:
    quick: bool
    repeat: int
    database_url: str
    database_source: str
    out_dir: Path
    work_dir: Path
    peer_venv: Path
    command: str
    machine: dict[str, Any]
    sizes: tuple[int, ...] | None = None  # --sizes: the log sizes of case 11 (None: its own)

    def reps(self) -> range:
        return range(self.repeat)


CaseRun = Callable[[Context], Awaitable[Outcome]]


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    number: int
    title: str
    run: CaseRun
    measures: str
    default: bool = True  # in a run without --case (False: only when asked for by name)
    # What the case needs from the machine, checked before any case runs: None, or why it
    # cannot run, naming the command that fixes it (the bench then stops at once).
    requires: Callable[[], str | None] | None = None


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "-m", "bench", *argv])


def git_revision() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 (git from PATH is the point)
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("-dirty" if dirty else "")


def machine_info() -> dict[str, Any]:
    """The machine as far as Python can see it (PostgreSQL's part is added by the database)."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
        "git_revision": git_revision(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.partition(":")[2].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_kib"] = int(line.split()[1])
                break
    except OSError:
        pass
    return info


def write_result(ctx: Context, case: Case, outcome: Outcome, elapsed_s: float) -> Path:
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    path = ctx.out_dir / f"{case.name}.json"
    document = {
        "case": case.name,
        "number": case.number,
        "title": case.title,
        "status": outcome.status,
        "reason": outcome.reason,
        "command": ctx.command,
        "mode": "quick" if ctx.quick else "full",
        "repetitions": ctx.repeat,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "elapsed_s": round(elapsed_s, 3),
        "machine": ctx.machine,
        "database": ctx.database_source,
        "parameters": outcome.parameters,
        "notes": outcome.notes,
        "results": outcome.rows,
    }
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path
