"""Soak: SIGKILL worker processes at random points while generations run; nothing may be lost.

The scenario of ``tests/test_faults.py::test_sigkill_workers_at_random_points_loses_nothing``
(written once, in ``tests/faults.py``),
longer: ``--workers`` `python -m service worker` processes (lease 1 s) run ``--generations``
generations, created one a second, while a killer SIGKILLs a random running worker every
0.3-0.8 s and starts a replacement at once, until ``--kills`` kills happened and every
generation finished. A `serve` process that runs nothing itself streams every generation
(reconnecting with Last-Event-ID when needed). Then every log is checked: seq exactly 1..N,
one terminal event, generation.succeeded, last; each phase completed once, in order, with its
files in the same batch; resumes going on at the first unfinished phase; the stored files
exactly those announced by file.saved; and each stream saw exactly the stored events.

Uses ``DATABASE_URL`` when set (migrated first), else a throwaway embedded PostgreSQL cluster
that is deleted afterwards. Prints a summary; exits 1 on any violation.

    .venv/bin/python -m scripts.soak --kills 60    # from the repository's root
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

KILL_INTERVAL_MEAN_S = 0.55


def arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.soak",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs at least (20)")
    parser.add_argument(
        "--generations",
        type=int,
        default=None,
        help="generations to run (default: max(8, kills / 2.5), so that runs are in flight "
        "for most of the kills)",
    )
    parser.add_argument("--workers", type=int, default=3, help="worker processes at a time (3)")
    parser.add_argument("--seed", type=int, default=None, help="the killer's seed (random)")
    parser.add_argument(
        "--deadline", type=float, default=None, help="give up after this many seconds"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every kill")
    args = parser.parse_args(argv)
    if args.kills < 0 or args.workers < 1 or (args.generations or 1) < 1:
        parser.error("--kills >= 0, --workers >= 1, --generations >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    from service.store.embedded import EmbeddedCluster, throwaway_cluster
    from service.store.migrate import upgrade

    cluster: EmbeddedCluster | None = None
    url = os.environ.get("DATABASE_URL")
    if not url:
        cluster = throwaway_cluster()
        url = cluster.start()
        print(f"throwaway PostgreSQL cluster in {cluster.root}", file=sys.stderr)
    try:
        upgrade(url)  # outside any event loop: Alembic's env.py runs its own
        return asyncio.run(soak(url, args))
    finally:
        if cluster is not None:
            cluster.destroy()


async def soak(url: str, args: argparse.Namespace) -> int:
    from service.access import keys
    from service.store.db import create_pool
    from tests.faults import Children, SoakParams, sigkill_scenario

    generations = args.generations or max(8, round(args.kills / 2.5))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    expected_s = args.kills * KILL_INTERVAL_MEAN_S + generations * 1.0
    params = SoakParams(
        generations=generations,
        workers=args.workers,
        min_kills=args.kills,
        seed=seed,
        deadline_s=args.deadline or max(90.0, 2 * expected_s + 30),
    )
    workdir = Path(tempfile.mkdtemp(prefix="genstream-soak-"))
    pool = await create_pool(url, min_size=1, max_size=4)
    children = Children(url, workdir)
    try:
        key = await keys.create_key(pool, "soak")
        report = await sigkill_scenario(
            children, pool, key, params, lambda line: print(line, file=sys.stderr)
        )
    except BaseException:
        print(f"the soak broke off; process logs kept in {workdir}", file=sys.stderr)
        raise
    finally:
        children.close()
        await pool.close()

    if args.verbose:
        print("\n".join(report.kills))
    succeeded = sum(
        1
        for s in report.stored.values()
        if s.events and s.events[-1]["type"] == "generation.succeeded"
    )
    violations = list(report.violations)
    if len(report.kills) < args.kills:
        violations.append(f"only {len(report.kills)} of {args.kills} kills happened")
    if args.kills and report.resumes == 0:
        violations.append("no run was ever resumed: the kills hit nothing")
    rows = [
        ("seed", str(seed)),
        ("workers", f"{args.workers} at a time, {report.workers_started} started"),
        ("kills", f"{len(report.kills)} ({report.kills_mid_run} while holding runs)"),
        ("resumes", str(report.resumes)),
        ("generations", f"{len(report.stored)} ({succeeded} succeeded)"),
        ("events", str(report.events)),
        ("violations", str(len(violations))),
        ("elapsed", f"{report.elapsed_s:.1f} s"),
    ]
    print("\n".join(f"{name:<12} {value}" for name, value in rows))
    for violation in violations:
        print(f"VIOLATION: {violation}")
    if violations or args.keep_logs:
        print(f"process logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
