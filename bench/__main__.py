"""``python -m bench [--quick] [--case NAME ...]``: run the cases, print tables, write JSON."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.cases import BY_NAME, CASES
from bench.core import (
    DEFAULT_RESULTS_DIR,
    PROJECT_ROOT,
    Case,
    Context,
    Outcome,
    command_line,
    machine_info,
    write_result,
)
from bench.database import bench_database, server_facts
from service.server import raise_open_file_limit


def parser() -> argparse.ArgumentParser:
    cases = "\n".join(
        f"  {case.name:<14} {case.number}. {case.title}"
        + ("" if case.default else " (only with --case)")
        for case in CASES
    )
    root = argparse.ArgumentParser(
        prog="python -m bench",
        description="genstream's benchmarks, each beside its reference in the same run.",
        epilog=f"cases:\n{cases}\n\nSee bench/README.md.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    root.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, 1 repetition")
    root.add_argument(
        "--case",
        action="append",
        choices=list(BY_NAME),
        metavar="NAME",
        help="run only this case (repeatable); default: all but those marked 'only with --case'",
    )
    root.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        metavar="N[,N...]",
        help="log-scale: the log sizes in events, grown to in turn "
        "(default 100000,1000000,10000000; --quick: 2000,4000)",
    )
    root.add_argument(
        "--repeat", type=int, default=None, help="repetitions (default 3; --quick: 1)"
    )
    root.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_RESULTS_DIR,
        help="where <case>.json files go (default bench/results/)",
    )
    root.add_argument(
        "--peer-venv",
        type=Path,
        default=PROJECT_ROOT / ".venv-bench-peer",
        help="the venv holding the eventsourcing library for case 6",
    )
    return root


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part.replace("_", "")) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of event counts: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def _print_outcome(case: Case, outcome: Outcome) -> None:
    if outcome.status != "ok":
        print(f"{outcome.status}: {outcome.reason}")
    for table in outcome.tables:
        print()
        print(table.render())
    for note in outcome.notes:
        print(f"- {note}")


async def _run_case(ctx: Context, case: Case) -> Outcome:
    try:
        return await case.run(ctx)
    except Exception as exc:
        traceback.print_exc()
        return Outcome(status="failed", reason=f"{type(exc).__name__}: {exc}")


async def run_cases(ctx: Context, cases: Sequence[Case]) -> int:
    ctx.machine["postgres"] = await server_facts(ctx.database_url)
    pg = ctx.machine["postgres"]
    print(
        f"machine: {ctx.machine['cpu_count']} CPUs, Python {ctx.machine['python']}, "
        f"PostgreSQL {pg['server_version']} (fsync={pg['fsync']}, "
        f"synchronous_commit={pg['synchronous_commit']}), "
        f"load average {ctx.machine['load_average_at_start'][0]:.2f}"
    )
    print(f"database: {ctx.database_source}")
    print(f"mode: {'quick' if ctx.quick else 'full'}, {ctx.repeat} repetition(s)")
    failed = []
    for case in cases:
        print(f"\n## {case.number}. {case.name}: {case.title}\n")
        print(f"_{case.measures}_", flush=True)
        started = time.perf_counter()
        outcome = await _run_case(ctx, case)
        elapsed = time.perf_counter() - started
        _print_outcome(case, outcome)
        path = write_result(ctx, case, outcome, elapsed)
        print(f"\n({case.name}: {outcome.status} in {elapsed:.1f}s; {path})", flush=True)
        if outcome.status == "failed":
            failed.append(case.name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
        return 1
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it): a cheaper load client."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(args_list)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        print("--repeat must be at least 1", file=sys.stderr)
        return 2
    cases = [BY_NAME[name] for name in args.case] if args.case else [c for c in CASES if c.default]
    unmet = [reason for case in cases if case.requires and (reason := case.requires())]
    if unmet:
        for reason in unmet:
            print(f"cannot run the bench: {reason}", file=sys.stderr)
        return 2
    raise_open_file_limit()
    work_dir = Path(tempfile.mkdtemp(prefix="genstream-bench-work-"))
    code = 1
    try:
        with bench_database() as database:
            ctx = Context(
                quick=args.quick,
                repeat=repeat,
                database_url=database.url,
                database_source=database.source,
                out_dir=args.out,
                work_dir=work_dir,
                peer_venv=args.peer_venv,
                command=command_line(args_list),
                machine=machine_info(),
                sizes=args.sizes,
            )
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                code = runner.run(run_cases(ctx, cases))
    finally:
        if code == 0:
            shutil.rmtree(work_dir, ignore_errors=True)
        else:
            print(f"server logs kept in {work_dir}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
