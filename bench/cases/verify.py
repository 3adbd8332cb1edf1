"""Case 8: verification, what checking a generated project in the sandbox costs. No database.

1. **Sandbox start-up**: ``run_sandboxed({}, [python, "-c", "pass"])`` (bwrap, its namespaces
   and mounts, the supervisor's own interpreter, the request and report pipes, then the
   command's interpreter) beside a bare ``asyncio.create_subprocess_exec(python, "-c",
   "pass")`` in the same run, interleaved with the order alternating; the p50 of each over
   ``STARTS`` runs per repetition. The difference is what the sandbox itself adds per step.
2. **Verify per project size**: ``service.verify.checks.verify`` over the offline provider's
   project for 1, 3 and 10 entities (``spec_of``: every field type, each entity referring to
   the one before it and, from the third on, to the one before that), default limits: each
   step's ``duration_ms`` as its ``CheckResult`` reports it (compile, import, tests), their
   sum, the files compiled and the tests passed.
3. **Its share of a run**: a whole ``PhasedGenerator`` run, offline provider, ``verify="tests"``,
   the sandbox checker with the service's default limits, ``Tuning()`` defaults and an emitter
   that only records, at the service's default pace (``offline_delay_s``, 0.05 s between
   64-character chunks) and at zero delay (the templates at full speed): the building phases'
   time (start to the verify phase's ``phase.started``), the verify phase's time (from there to
   the run's end) and the verify phase's share of the run.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.core import Context, Outcome, Summary, Table, fmt_summary, ratio, row
from service.events import EventType, NewEvent, NewFile
from service.generation.generator import PhasedGenerator, Tuning
from service.generation.providers.offline import STAGES, OfflineProvider, render_phase
from service.generation.verification import sandbox_checker
from service.settings import Settings
from service.spec import Spec
from service.verify import checks
from service.verify.checks import STEPS, CheckResult
from service.verify.limits import Limits
from service.verify.sandbox import SandboxUnavailable, run_sandboxed

SIZES = (1, 3, 10)
QUICK_SIZES = (1,)
STARTS = 20
QUICK_STARTS = 5
SERVICE_PACE_S = float(Settings.model_fields["offline_delay_s"].default)  # 0.05
PACES = (SERVICE_PACE_S, 0.0)
PASS = [sys.executable, "-c", "pass"]


def spec_of(entities: int) -> Spec:
    """``entities`` entities of every field type, each (but the first) referring to the one
    before it, and from the third on to the one before that too (``ref:``). The tests of the
    checks and of verified runs use these specs too."""
    raw: list[dict[str, Any]] = []
    for number in range(entities):
        fields = {"title": "str", "count": "int", "price": "float", "active": "bool"}
        fields |= {"placed_at": "datetime", "code": "uuid"}
        if number >= 1:
            fields["parent"] = f"Thing{number - 1}"
        if number >= 2:
            fields["grandparent"] = f"ref:Thing{number - 2}"
        raw.append({"name": f"Thing{number}", "fields": fields})
    return Spec.model_validate({"project": f"things-{entities}", "entities": raw})


def offline_files(spec: Spec) -> dict[str, str]:
    return {file.path: file.content for stage in STAGES for file in render_phase(spec, stage)}


def limits_of_service() -> Limits:
    """The limits a worker verifies with (GENSTREAM_VERIFY_* from the environment, else the
    defaults); the bench's database URL is none of its business."""
    return Limits.from_settings(Settings(DATABASE_URL=None))


# 1. Sandbox start-up


async def _sandboxed_start(limits: Limits) -> float:
    started = time.monotonic()
    result = await run_sandboxed({}, PASS, limits)
    elapsed = time.monotonic() - started
    if result.exit_code != 0:
        raise RuntimeError(f"`python -c pass` failed in the sandbox: {result.output[-500:]}")
    return elapsed * 1000


async def _bare_start() -> float:
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(*PASS)
    code = await process.wait()
    elapsed = time.monotonic() - started
    if code != 0:
        raise RuntimeError(f"`python -c pass` exited with status {code}")
    return elapsed * 1000


async def start_up(limits: Limits, runs: int) -> tuple[float, float]:
    """The p50 (ms) of ``runs`` sandboxed and ``runs`` bare starts, interleaved, the order
    alternating; one untimed start of each first."""
    await _sandboxed_start(limits)
    await _bare_start()
    sandboxed: list[float] = []
    bare: list[float] = []
    for index in range(runs):
        if index % 2:
            bare.append(await _bare_start())
            sandboxed.append(await _sandboxed_start(limits))
        else:
            sandboxed.append(await _sandboxed_start(limits))
            bare.append(await _bare_start())
    return statistics.median(sandboxed), statistics.median(bare)


# 2. Verify per project size


@dataclass(slots=True)
class Checked:
    """One verification of a project: each step's ms and the counts."""

    step_ms: dict[str, float]
    files_compiled: int
    tests_passed: int

    @property
    def total_ms(self) -> float:
        return sum(self.step_ms.values())


def _checked(results: Sequence[CheckResult], entities: int) -> Checked:
    failed = [result for result in results if not result.ok]
    if failed or [result.step for result in results] != list(STEPS):
        reason = failed[0].reason if failed else "a step did not run"
        raise RuntimeError(f"the {entities}-entity offline project did not verify: {reason}")
    by_step = {result.step: result for result in results}
    return Checked(
        step_ms={step: float(by_step[step].duration_ms) for step in STEPS},
        files_compiled=by_step["compile"].counts.passed,
        tests_passed=by_step["tests"].counts.passed,
    )


async def verify_once(files: dict[str, str], limits: Limits, entities: int) -> Checked:
    return _checked([result async for result in checks.verify(files, limits)], entities)


# 3. Its share of a run


@dataclass(slots=True)
class RecordingEmitter:
    """An Emitter that keeps every event with the moment it was emitted, and nothing else."""

    events: list[tuple[float, NewEvent]] = field(default_factory=list)
    files: list[NewFile] = field(default_factory=list)

    async def emit(self, *events: NewEvent, files: Sequence[NewFile] = ()) -> None:
        now = time.monotonic()
        self.events += [(now, event) for event in events]
        self.files += files


@dataclass(slots=True)
class Timed:
    building_s: float
    verify_s: float

    @property
    def run_s(self) -> float:
        return self.building_s + self.verify_s

    @property
    def share_pct(self) -> float:
        return 100 * self.verify_s / self.run_s


async def one_run(spec: Spec, delay_s: float, limits: Limits) -> Timed:
    emitter = RecordingEmitter()
    generator = PhasedGenerator(
        OfflineProvider(delay_s=delay_s), emitter, Tuning(), checker=sandbox_checker(limits)
    )
    started = time.monotonic()
    verification = await generator.run(spec, verify="tests")
    ended = time.monotonic()
    if not verification["ok"]:
        raise RuntimeError(f"the run's verification failed: {verification['summary']}")
    verify_started = next(
        at
        for at, event in emitter.events
        if event.type == EventType.PHASE_STARTED and event.stage == "verify"
    )
    return Timed(building_s=verify_started - started, verify_s=ended - verify_started)


def _bwrap_version() -> str | None:
    found = shutil.which("bwrap")
    if found is None:
        return None
    try:
        done = subprocess.run(
            [found, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


async def run(ctx: Context) -> Outcome:
    sizes = QUICK_SIZES if ctx.quick else SIZES
    starts = QUICK_STARTS if ctx.quick else STARTS
    limits = limits_of_service()
    outcome = Outcome(
        parameters={
            "entities": list(sizes),
            "start_up_runs": starts,
            "paces_s": list(PACES),
            "limits": asdict(limits),
            "tuning": asdict(Tuning()),
            "bwrap": _bwrap_version(),
            "provider": "offline (templates-v1), 64-character chunks",
        }
    )
    projects = {n: offline_files(spec_of(n)) for n in sizes}
    specs = {n: spec_of(n) for n in sizes}
    sandboxed: list[float] = []
    bare: list[float] = []
    checked: dict[int, list[Checked]] = {n: [] for n in sizes}
    timed: dict[tuple[int, float], list[Timed]] = {(n, p): [] for n in sizes for p in PACES}
    try:
        for rep in ctx.reps():
            ms_sandboxed, ms_bare = await start_up(limits, starts)
            sandboxed.append(ms_sandboxed)
            bare.append(ms_bare)
            for n in sizes:
                checked[n].append(await verify_once(projects[n], limits, n))
            for n in sizes:
                # A paced run's building time is the pace times its chunks, the same every
                # time: one repetition of it; the full-speed runs repeat.
                # Quick: full speed only (a smoke run checks that it runs, not the pace).
                paced = rep == 0 and not ctx.quick
                for pace in PACES if paced else tuple(p for p in PACES if p == 0):
                    timed[n, pace].append(await one_run(specs[n], pace, limits))
    except SandboxUnavailable as exc:
        return Outcome(status="skipped", reason=f"no sandbox on this machine: {exc}")

    outcome.tables.append(_start_up_table(outcome, starts, sandboxed, bare))
    outcome.tables.append(_verify_table(outcome, projects, checked))
    outcome.tables.append(_share_table(outcome, timed))
    outcome.notes.append(
        "sandbox start-up = run_sandboxed: bwrap (namespaces, mounts, a tmpfs), the supervisor "
        "(a second interpreter, python -I -S), the request and report pipes, then the command; "
        "verify runs one sandbox per step, three per project."
    )
    outcome.notes.append(
        "step ms are the CheckResults' duration_ms (each its own sandbox, start-up included); "
        "the run's verify phase is timed from its phase.started to the run's end, so it also "
        "holds the check.completed and phase.completed events (an in-memory emitter here)."
    )
    return outcome


def _start_up_table(
    outcome: Outcome, starts: int, sandboxed: list[float], bare: list[float]
) -> Table:
    own = Summary.of([s - b for s, b in zip(sandboxed, bare, strict=True)])
    versus = ratio(sandboxed, bare)
    table = Table(
        f"Sandbox start-up: `python -c pass`, p50 of {starts} runs each, interleaved "
        "(median (min-max) over repetitions)",
        ["in the sandbox ms", "bare subprocess ms", "the sandbox's own ms", "ratio"],
    )
    table.add(
        fmt_summary(Summary.of(sandboxed)),
        fmt_summary(Summary.of(bare)),
        fmt_summary(own),
        fmt_summary(versus, "x"),
    )
    outcome.rows.append(
        row(
            {"measure": "start-up", "runs": starts, "argv": "python -c pass"},
            sandboxed_start_ms=Summary.of(sandboxed),
            bare_start_ms=Summary.of(bare),
            sandbox_own_ms=own,
            ratio_sandboxed_to_bare=versus,
        )
    )
    return table


def _verify_table(
    outcome: Outcome, projects: dict[int, dict[str, str]], checked: dict[int, list[Checked]]
) -> Table:
    table = Table(
        "Verify per project size: the offline project, default limits, each step in its own "
        "sandbox (median (min-max) over repetitions)",
        ["entities", "files", "Python files compiled", "tests passed", "compile ms",
         "import ms", "tests ms", "total ms", "tests ms / test passed"],
    )  # fmt: skip
    for n, results in checked.items():
        steps = {step: Summary.of([c.step_ms[step] for c in results]) for step in STEPS}
        total = Summary.of([c.total_ms for c in results])
        per_test = Summary.of([c.step_ms["tests"] / max(c.tests_passed, 1) for c in results])
        compiled = results[0].files_compiled
        passed = results[0].tests_passed
        table.add(
            str(n),
            str(len(projects[n])),
            str(compiled),
            str(passed),
            *(fmt_summary(steps[step]) for step in STEPS),
            fmt_summary(total),
            fmt_summary(per_test),
        )
        outcome.rows.append(
            row(
                {"measure": "verify", "entities": n, "files": len(projects[n])},
                **{f"{step}_ms": steps[step] for step in STEPS},
                total_ms=total,
                tests_ms_per_test=per_test,
                files_compiled=compiled,
                tests_passed=passed,
            )
        )
    return table


def _share_table(outcome: Outcome, timed: dict[tuple[int, float], list[Timed]]) -> Table:
    table = Table(
        'Verify\'s share of a run: PhasedGenerator, offline provider, verify="tests", '
        "in-memory emitter (median (min-max) over repetitions; the paced runs: one)",
        ["entities", "provider delay s", "building phases s", "verify phase s", "run s",
         "verify share %"],
    )  # fmt: skip
    for (n, pace), results in timed.items():
        if not results:  # a quick run leaves the paced runs out
            continue
        building = Summary.of([t.building_s for t in results])
        verifying = Summary.of([t.verify_s for t in results])
        whole = Summary.of([t.run_s for t in results])
        share = Summary.of([t.share_pct for t in results])
        label = f"{pace:g}" + (" (service default)" if pace == SERVICE_PACE_S else "")
        table.add(
            str(n),
            label,
            fmt_summary(building),
            fmt_summary(verifying),
            fmt_summary(whole),
            fmt_summary(share),
        )
        outcome.rows.append(
            row(
                {"measure": "run", "entities": n, "delay_s": pace, "verify": "tests"},
                building_s=building,
                verify_s=verifying,
                run_s=whole,
                verify_share_pct=share,
            )
        )
    return table
