"""Case 6: the peer, the ``eventsourcing`` library's PostgreSQL recorder, beside genstream.

The library lives in the bench's own venv (``.venv-bench-peer/`` at the project root, made with
``python -m venv`` and pip on first use), never in genstream's dependencies; it runs in a
subprocess under that venv's interpreter (``bench/peer_eventsourcing.py``). genstream's
append path is measured in the same run with the same number of writers, single events.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from bench.appends import service_rate
from bench.core import BENCH_DIR, Context, Outcome, Summary, Table, fmt_summary, ratio, row
from bench.database import connection_parts

PACKAGES = ("eventsourcing[postgres]", "psycopg")
STAMP = ".bench-peer-installed"
INSTALL_TIMEOUT_S = 600.0
TARGET_RATIO = 3.0


async def _run(*args: str, limit_s: float, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=None if env is None else {**os.environ, **env},
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), limit_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, f"timed out after {limit_s:.0f}s"
    return proc.returncode or 0, out.decode(errors="replace")


async def ensure_venv(venv: Path) -> tuple[Path | None, str | None]:
    """The peer venv's interpreter, creating the venv if needed; else (None, why not)."""
    python = venv / "bin" / "python"
    if not ((venv / STAMP).exists() and python.exists()):
        print(f"  installing {' '.join(PACKAGES)} into {venv} (once)", flush=True)
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", *PACKAGES],
        ]
        for step in steps:
            code, output = await _run(*step, limit_s=INSTALL_TIMEOUT_S)
            if code != 0:
                tail = "\n".join(output.strip().splitlines()[-5:])
                return None, f"could not install the peer ({' '.join(step[:4])}...): {tail}"
        (venv / STAMP).write_text(" ".join(PACKAGES) + "\n")
    # psycopg loads libpq at import: check it really works under that interpreter.
    code, output = await _run(
        str(python),
        "-c",
        "import eventsourcing.postgres, psycopg; print(psycopg.pq.version())",
        limit_s=60,
    )
    if code != 0:
        tail = "\n".join(output.strip().splitlines()[-3:])
        return None, f"the peer's venv cannot load eventsourcing/psycopg: {tail}"
    return python, None


async def peer_rate(python: Path, database_url: str, writers: int, seconds: float) -> float:
    parts = connection_parts(database_url)
    code, output = await _run(
        str(python),
        str(BENCH_DIR / "peer_eventsourcing.py"),
        "--host", parts.host,
        "--port", str(parts.port),
        "--user", parts.user,
        "--dbname", parts.dbname,
        "--writers", str(writers),
        "--seconds", str(seconds),
        limit_s=seconds + 120,
        # In the environment, not the command line: any local user can read a command line.
        env={"PGPASSWORD": parts.password},
    )  # fmt: skip
    if code != 0:
        raise RuntimeError(f"the peer failed ({code}):\n{output[-2000:]}")
    result = json.loads(output.strip().splitlines()[-1])
    rate: float = result["events_per_s"]
    return rate


async def run(ctx: Context) -> Outcome:
    python, reason = await ensure_venv(ctx.peer_venv)
    if python is None:
        return Outcome(status="skipped", reason=reason)
    seconds = 0.5 if ctx.quick else 3.0
    writer_counts = (1, 4)
    outcome = Outcome(
        parameters={
            "window_s": seconds,
            "writers": writer_counts,
            "events_per_append": 1,
            "peer_venv": str(ctx.peer_venv),
            "peer": "eventsourcing PostgresApplicationRecorder.insert_events, one event a call",
        }
    )
    rates: dict[tuple[int, str], list[float]] = {}
    for rep in ctx.reps():
        for writers in writer_counts:
            order = ("peer", "genstream") if rep % 2 == 0 else ("genstream", "peer")
            for which in order:
                if which == "peer":
                    rate = await peer_rate(python, ctx.database_url, writers, seconds)
                else:
                    rate = await service_rate(ctx.database_url, writers, 1, seconds)
                rates.setdefault((writers, which), []).append(rate)

    table = Table(
        "Single-event appends, genstream beside the eventsourcing library (events/s)",
        ["writers", "eventsourcing", "genstream", "genstream / eventsourcing"],
    )
    missed: list[str] = []
    for writers in writer_counts:
        peer, service = rates[(writers, "peer")], rates[(writers, "genstream")]
        relative = ratio(service, peer)
        if relative.median < TARGET_RATIO:
            missed.append(f"{writers} writer(s) ({relative.median:.2f}x)")
        table.add(
            str(writers),
            fmt_summary(Summary.of(peer)),
            fmt_summary(Summary.of(service)),
            fmt_summary(relative),
        )
        outcome.rows.append(
            row(
                {"writers": writers},
                peer_events_per_s=Summary.of(peer),
                genstream_events_per_s=Summary.of(service),
                ratio_genstream_to_peer=relative,
            )
        )
    outcome.tables.append(table)
    outcome.notes.append(
        "the peer locks its whole events table (LOCK TABLE ... IN EXCLUSIVE MODE) in every "
        "write, so its writers queue behind each other; genstream locks one generation's row."
    )
    outcome.notes.append(
        f"target >= {TARGET_RATIO:.0f}x the peer: "
        + ("met" if not missed else "missed at " + ", ".join(missed))
    )
    return outcome
