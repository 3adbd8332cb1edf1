"""What a generation's verification is made of, apart from the run that drives it: the steps of
each level, the checker seam (the sandboxed checks in production, a script in a unit test),
and a check's result as the event data the log and the repair prompt read.

The rounds themselves (verify, repair, verify again) are driven by ``generator.py``, which owns
the emitter and the progress bar.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from service.events import CheckCompletedData, CheckCounts, CheckStep, Verification, VerifyLevel
from service.verify import checks
from service.verify.checks import CheckResult
from service.verify.limits import Limits

OUTPUT_CHARS = 8_000
"""Of a failed check's output, kept in its event: what a reader, a replay and a repair prompt
see (the sandbox keeps GENSTREAM_VERIFY_OUTPUT_KB; tracebacks put the cause at the end)."""

LEVEL_STEPS: Mapping[VerifyLevel, tuple[CheckStep, ...]] = {
    "off": (),
    "compile": ("compile",),
    "tests": ("compile", "import", "tests"),
}

Checker = Callable[[Mapping[str, str], Sequence[CheckStep]], AsyncIterator[CheckResult]]
"""Runs the given steps over the files; yields each result as it finishes, stops at a failure."""


def sandbox_checker(limits: Limits) -> Checker:
    """The checks of ``service/verify``, each in a bubblewrap sandbox with these limits."""

    def check(files: Mapping[str, str], steps: Sequence[CheckStep]) -> AsyncIterator[CheckResult]:
        return checks.verify(files, limits, steps=steps)

    return check


def not_verified() -> Verification:
    """The verification of a run whose request said ``verify: off``."""
    return Verification(
        level="off", ok=True, summary="not verified (verify: off)", rounds=0, repairs=0, checks=[]
    )


def check_data(result: CheckResult, round_: int) -> CheckCompletedData:
    """A step's result as ``check.completed``'s data; the output only when it failed."""
    counts = result.counts
    data = CheckCompletedData(
        step=result.step,
        ok=result.ok,
        reason=result.reason,
        counts=CheckCounts(
            passed=counts.passed,
            failed=counts.failed,
            errors=counts.errors,
            skipped=counts.skipped,
            total=counts.total,
        ),
        failing=list(result.failing),
        duration_ms=result.duration_ms,
        output="" if result.ok else result.output[-OUTPUT_CHARS:],
        round=round_,
    )
    if result.stopped_by is not None:
        data["stopped_by"] = result.stopped_by
    return data


def round_outcome(
    level: VerifyLevel, done: Sequence[CheckCompletedData], round_: int, repairs: int
) -> Verification:
    """A round's verification: passed only if every step of the level ran and passed."""
    failed = [check for check in done if not check["ok"]]
    passed = not failed and len(done) == len(LEVEL_STEPS[level])
    if failed:
        summary = failed[0]["reason"]
    else:
        summary = "; ".join(check["reason"] for check in done) or "no check ran"
    return Verification(
        level=level, ok=passed, summary=summary, rounds=round_, repairs=repairs, checks=list(done)
    )
