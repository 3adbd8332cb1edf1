"""The benchmark suite's smoke run: ``python -m bench --quick`` completes and its numbers are sane.

Never a time limit on what the bench measured: only that every implemented case ran, printed
its table and wrote its JSON, that rates are positive, percentiles ordered, and that every
event published in the stream cases reached every stream that followed it.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from bench.cases import CASES
from service.settings import PROJECT_ROOT
from service.store.db import asyncpg_dsn
from tests.helpers import execute_as_admin

pytestmark = pytest.mark.slow

BENCH_TIMEOUT_S = 360.0  # the quick run of every case took 3.4 minutes on a loaded 2-core machine
# Every case ``make bench`` runs, but the peers: their own test below runs them (30 s each time).
SMOKED = [case for case in CASES if case.default and case.name != "peers"]


async def _bench_env(request: pytest.FixtureRequest) -> tuple[dict[str, str], str | None]:
    """The bench's environment, and the database to drop afterwards (if we made one).

    Without TEST_DATABASE_URL the bench starts its own throwaway cluster, as ``make bench``
    does. With it (a server, perhaps without local PostgreSQL binaries), a fresh database on
    that server.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "BENCH_DATABASE_URL")}
    if not os.environ.get("TEST_DATABASE_URL"):
        return env, None
    server_url: str = request.getfixturevalue("server_url")
    name = f"bench_{uuid4().hex[:12]}"
    await execute_as_admin(server_url, f"CREATE DATABASE {name}")
    base, _, _ = asyncpg_dsn(server_url).rpartition("/")
    env["BENCH_DATABASE_URL"] = f"{base}/{name}"
    return env, name


def _sections(output: str) -> dict[str, str]:
    """The printed output split per case (``## <number>. <name>: <title>`` headings)."""
    sections: dict[str, str] = {}
    for part in output.split("\n## ")[1:]:
        heading, _, body = part.partition("\n")
        name = heading.split(" ", 1)[1].split(":", 1)[0]
        sections[name] = body
    return sections


def _metrics(document: dict[str, Any]) -> Iterator[tuple[str, list[float]]]:
    for result in document["results"]:
        for name, value in result["metrics"].items():
            if isinstance(value, dict):
                yield name, [float(v) for v in value["values"]]
            elif isinstance(value, int | float):
                yield name, [float(value)]


@pytest.mark.timeout(BENCH_TIMEOUT_S + 120)
async def test_quick_bench_runs_every_implemented_case_and_writes_sane_results(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env, database = await _bench_env(request)
    out = tmp_path / "results"
    cases = [arg for case in SMOKED for arg in ("--case", case.name)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "--quick", *cases, "--out", str(out),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        raw, _ = await asyncio.wait_for(proc.communicate(), BENCH_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"python -m bench --quick did not finish in {BENCH_TIMEOUT_S:.0f}s")
    finally:
        if database is not None:
            await execute_as_admin(
                request.getfixturevalue("server_url"),
                f"DROP DATABASE IF EXISTS {database} WITH (FORCE)",
            )
    output = raw.decode(errors="replace")
    assert proc.returncode == 0, output[-6000:]

    sections = _sections(output)
    assert set(sections) == {case.name for case in SMOKED}, list(sections)
    for case in SMOKED:
        document = json.loads((out / f"{case.name}.json").read_text())
        assert document["mode"] == "quick"
        assert "--quick" in document["command"]
        assert document["machine"]["cpu_count"] >= 1
        assert document["machine"]["python"]
        assert document["machine"]["postgres"]["server_version"]
        # Only the peer (its install can fail) and the page (without Chromium) may skip.
        if document["status"] == "skipped":
            no_browser = case.name == "page" and shutil.which("chromium") is None
            assert case.name == "peer" or no_browser, document["reason"]
            assert document["reason"]
            assert f"skipped: {document['reason']}" in sections[case.name]
            continue
        assert document["status"] == "ok", document["reason"]
        lines = sections[case.name].splitlines()
        assert any(line.startswith("| ") for line in lines), sections[case.name]
        assert any(line.startswith("|---") for line in lines), sections[case.name]
        assert document["results"], case.name

        for name, values in _metrics(document):
            if name.endswith("_per_s") or name.startswith("ratio"):
                assert all(v > 0 for v in values), (case.name, name, values)
            if name == "undelivered":
                assert values == [0.0], (case.name, "events did not reach their streams")
            if name == "kib_per_idle_stream":
                assert all(math.isfinite(v) for v in values), (case.name, name, values)
        for result in document["results"]:
            found = result["metrics"]
            if "p50_ms" in found:
                for p50, p95, p99, top in zip(
                    found["p50_ms"]["values"],
                    found["p95_ms"]["values"],
                    found["p99_ms"]["values"],
                    found["max_ms"]["values"],
                    strict=True,
                ):
                    assert 0 < p50 <= p95 <= p99 <= top, (case.name, result["params"])


@pytest.mark.timeout(BENCH_TIMEOUT_S)
async def test_quick_log_scale_grows_the_log_and_measures_each_size(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Case 11 is left out of the default run; asked for, its quick run (2,000 then 4,000
    events) fills (into monthly partitions), measures and reports both sizes, and a retention
    pass at the second."""
    env, database = await _bench_env(request)
    out = tmp_path / "results"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "--quick", "--case", "log-scale", "--out", str(out),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        raw, _ = await asyncio.wait_for(proc.communicate(), BENCH_TIMEOUT_S - 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if database is not None:
            await execute_as_admin(
                request.getfixturevalue("server_url"),
                f"DROP DATABASE IF EXISTS {database} WITH (FORCE)",
            )
    output = raw.decode(errors="replace")
    assert proc.returncode == 0, output[-6000:]
    document = json.loads((out / "log-scale.json").read_text())
    assert document["status"] == "ok", document["reason"]
    assert document["number"] == 11
    assert document["parameters"]["sizes"] == [2_000, 4_000]
    by_size: dict[int, dict[str, Any]] = {}
    for result in document["results"]:
        by_size.setdefault(result["params"]["size"], {})[result["params"]["measure"]] = result
    assert set(by_size) == {2_000, 4_000}
    for size, measures in by_size.items():
        assert measures["sizes"]["metrics"]["stored_events"] >= size
        assert measures["sizes"]["metrics"]["total_bytes_per_event"] > 0
        assert measures["append"]["metrics"]["value"]["median"] > 0
        assert measures["fill"]["metrics"]["partitions_made"] >= (size == 2_000)
        for name in ("open", "catch-up", "global feed", "owner feed (heavy)"):
            assert measures[name]["metrics"]["value"]["median"] > 0, (size, name)
        assert any(name.startswith("view analytics_") for name in measures)
    assert by_size[2_000]["fill"]["metrics"]["events"] >= 2_000
    assert by_size[4_000]["fill"]["metrics"]["events"] > 0  # grown, not refilled
    # Retention at the largest size only, last: it drops and redacts a share of the runs.
    assert "retention real" not in by_size[2_000]
    real = by_size[4_000]["retention real"]["metrics"]
    assert real["dropped_events"] > 0
    assert real["redacted_events"] > 0
    assert (
        by_size[4_000]["retention dry run"]["metrics"]["dropped_events"] == real["dropped_events"]
    )
    assert by_size[4_000]["after retention: open, redacted run"]["metrics"]["value"]["median"] > 0
    assert "The curve" in output


def _processes_under(path: Path) -> list[str]:
    """Command lines of live processes (zombies aside) that name something under ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z" and str(path) in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.timeout(BENCH_TIMEOUT_S)
async def test_quick_peers_measures_every_system_on_every_shape_and_leaves_no_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Case 12 on its own, quick: Redis (always and everysec), NATS JetStream, genstream and
    bare PostgreSQL on the four shapes. Rates and latencies are positive, every event reached
    its reader, crash counts are integers, nothing acknowledged after an fsync was lost to the
    kill -9, and no server outlives the run (its temporary files all go under one directory,
    which no live process names afterwards)."""
    env, database = await _bench_env(request)
    scratch = Path(tempfile.mkdtemp(prefix="genstream-bench-peers-"))
    scratch.chmod(0o755)  # the embedded clusters' postgres user must reach inside
    env["TMPDIR"] = str(scratch)
    out = tmp_path / "results"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "--quick", "--case", "peers", "--out", str(out),
        cwd=PROJECT_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        raw, _ = await asyncio.wait_for(proc.communicate(), BENCH_TIMEOUT_S - 30)
        left = _processes_under(scratch)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)
        if database is not None:
            await execute_as_admin(
                request.getfixturevalue("server_url"),
                f"DROP DATABASE IF EXISTS {database} WITH (FORCE)",
            )
    output = raw.decode(errors="replace")
    assert proc.returncode == 0, output[-6000:]
    assert left == [], "servers outlived the bench"
    document = json.loads((out / "peers.json").read_text())
    assert document["status"] == "ok", document["reason"]
    assert document["number"] == 12
    assert document["mode"] == "quick"
    assert "syncs on an interval, not per message" in output
    systems = {"redis-always", "redis-everysec", "nats", "genstream", "postgres"}
    by_shape: dict[str, list[dict[str, Any]]] = {}
    for result in document["results"]:
        by_shape.setdefault(result["params"]["shape"], []).append(result)

    appends = [r for r in by_shape["append"] if not r["params"].get("ratios")]
    assert {(r["params"]["system"], r["params"]["writers"]) for r in appends} == {
        (system, writers) for system in systems for writers in (1, 4, 16)
    }
    for result in by_shape["append"]:
        for name, value in result["metrics"].items():
            assert all(v > 0 for v in value["values"]), (result["params"], name)

    streams = document["parameters"]["live_streams"]
    assert {(r["params"]["system"], r["params"]["streams"]) for r in by_shape["delivery"]} == {
        (system, count) for system in systems for count in streams
    }
    for result in by_shape["delivery"]:
        found = result["metrics"]
        assert found["undelivered"] == 0, result["params"]
        assert found["expected"] > 0
        for p50, p99, top in zip(
            found["p50_ms"]["values"], found["p99_ms"]["values"], found["max_ms"]["values"],
            strict=True,
        ):  # fmt: skip
            assert 0 < p50 <= p99 <= top, result["params"]

    assert {r["params"]["system"] for r in by_shape["catch-up"]} == systems - {"redis-everysec"}
    for result in by_shape["catch-up"]:
        assert result["metrics"]["events_per_s"]["median"] > 0, result["params"]
        assert result["metrics"]["ratio_to_genstream"]["median"] > 0, result["params"]

    assert {(r["params"]["system"], r["params"]["streams"]) for r in by_shape["write alone"]} == {
        (system, count) for system in systems for count in streams
    }
    for result in by_shape["write alone"] + by_shape["disk"]:
        for name, value in result["metrics"].items():
            assert all(v > 0 for v in value["values"]), (result["params"], name)
    assert {r["params"]["preallocated"] for r in by_shape["disk"]} == {False, True}

    crashes = {r["params"]["system"]: r for r in by_shape["crash"]}
    assert set(crashes) == systems
    for system, result in crashes.items():
        found = result["metrics"]
        assert isinstance(found["acknowledged"], int), system
        assert found["acknowledged"] > 0, system
        assert isinstance(found["missing"], int), system
        assert found["missing"] >= 0, system
        assert found["restart_s"]["median"] > 0, system
        for repetition in result["repetitions"]:
            assert isinstance(repetition["acknowledged"], int), system
            assert isinstance(repetition["missing"], int), system
            assert repetition["stored"] >= repetition["acknowledged"] - repetition["missing"]
    # Acknowledged only once fsynced: a kill -9 must not take any of it.
    for system in ("redis-always", "genstream", "postgres"):
        assert crashes[system]["metrics"]["missing"] == 0, system
