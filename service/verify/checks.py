"""The checks of a generated project, in order: its Python compiles, its app imports, its tests
pass. Each runs in a sandbox of its own (``sandbox.py``) over the files as stored, with
genstream's own interpreter, which has everything a generated project may use (litestar,
pydantic, pytest, httpx).

1. ``compile``: ``compile()`` of every ``.py`` file, each failure with its file and line.
   Inside the sandbox too: compiling untrusted text runs no code of it, but deep nesting or a
   huge literal can still cost memory and time.
2. ``import``: ``import app.main``, the app module of the project's layout (the offline
   templates' ``app/main.py``, which the prompts ask a model for as well).
3. ``tests``: ``python -m pytest`` in the project, counted from its JUnit XML report. Plugins
   of genstream's environment are not loaded (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``): the project
   names none, and loading them cost 4 s a run.

``verify`` stops at the first step that fails: code that does not compile cannot import, and
tests of an app that does not import repeat the import's error, slowly. Each result has a
one-line ``reason`` in words, for the log and a repair prompt, and the output's tail.

What a result cannot be: proof against the code itself. The report is written inside the
sandbox, so a hostile suite can forge a pass (a conftest can do that anyway); the sandbox makes
sure that this is ALL it can do.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ElementTree
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from service.verify.limits import Limit, Limits
from service.verify.sandbox import RESULT, SandboxResult, run_sandboxed

Step = Literal["compile", "import", "tests"]
STEPS: tuple[Step, ...] = ("compile", "import", "tests")
APP_MODULE = "app.main"
APP_FILE = "app/main.py"
NAMES_IN_REASON = 5

_COMPILE = f"""
import json, sys
failures = []
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as file:
            compile(file.read(), path, "exec", dont_inherit=True)
    except SyntaxError as error:
        failures.append({{"path": path, "line": error.lineno, "message": error.msg}})
    except (ValueError, RecursionError, MemoryError) as error:
        failures.append({{"path": path, "line": None, "message": repr(error)}})
with open({RESULT!r}, "w") as file:
    json.dump({{"files": len(sys.argv) - 1, "failures": failures}}, file)
sys.exit(1 if failures else 0)
"""

_IMPORT = f"""
import importlib, json, os, sys, traceback
try:
    importlib.import_module({APP_MODULE!r})
except BaseException as error:
    traceback.print_exc()
    here = os.getcwd() + os.sep
    ours = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(here)]
    where = {{"file": ours[-1].filename[len(here):], "line": ours[-1].lineno}} if ours else {{}}
    with open({RESULT!r}, "w") as file:
        json.dump({{"error": f"{{type(error).__name__}}: {{error}}", **where}}, file)
    sys.exit(1)
"""


@dataclass(frozen=True)
class Counts:
    """Files (compile), modules (import) or tests (tests) that passed, failed, errored."""

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors + self.skipped


@dataclass(frozen=True)
class CheckResult:
    step: Step
    ok: bool
    reason: str  # one line in words, whether it passed or not
    counts: Counts
    failing: tuple[str, ...]  # the files (compile, import) or tests that failed
    duration_ms: int
    output: str  # the tail of the step's output (GENSTREAM_VERIFY_OUTPUT_KB)
    stopped_by: Limit | None = None


async def verify(
    files: Mapping[str, str], limits: Limits, *, steps: Sequence[Step] = STEPS
) -> AsyncIterator[CheckResult]:
    """Each step's result as it finishes, in ``STEPS`` order, until one fails."""
    for step in STEPS:
        if step in steps:
            result = await CHECKS[step](files, limits)
            yield result
            if not result.ok:
                return


def summary(results: Sequence[CheckResult]) -> str:
    """The verification in one line: the first failure's reason, or what passed."""
    failed = [result for result in results if not result.ok]
    if failed:
        return failed[0].reason
    return "; ".join(result.reason for result in results) or "not verified"


async def check_compile(files: Mapping[str, str], limits: Limits) -> CheckResult:
    python = sorted(path for path in files if path.endswith(".py"))
    if not python:
        return _refused("compile", "the project has no Python files")
    run = await run_sandboxed(
        files, [sys.executable, "-I", "-S", "-c", _COMPILE, *python], limits, want_result=True
    )
    report = _json(run.result)
    failures = report.get("failures") if isinstance(report, dict) else None
    if run.stopped_by or not isinstance(failures, list):
        return _broken("compile", run, "compiling")
    counts = Counts(passed=len(python) - len(failures), failed=len(failures))
    where = [_where(failure) for failure in failures]
    if not failures and run.exit_code == 0:
        return _result("compile", run, True, f"{len(python)} Python files compile", counts)
    if len(failures) == 1:
        reason = f"{where[0][0]} does not compile: {where[0][1]}"
    else:
        shown = "; ".join(f"{path}: {problem}" for path, problem in where[:NAMES_IN_REASON])
        reason = f"{len(failures)} of {len(python)} Python files do not compile: {shown}"
        reason += _more(len(failures))
    return _result("compile", run, False, reason, counts, tuple(path for path, _ in where))


async def check_import(files: Mapping[str, str], limits: Limits) -> CheckResult:
    if APP_FILE not in files:
        return _refused("import", f"the project has no {APP_FILE}, its app module")
    run = await run_sandboxed(files, [sys.executable, "-c", _IMPORT], limits, want_result=True)
    if run.ok:
        return _result("import", run, True, f"{APP_MODULE} imports", Counts(passed=1))
    report = _json(run.result)
    if run.stopped_by or not isinstance(report, dict) or not isinstance(report.get("error"), str):
        return _broken("import", run, f"importing {APP_MODULE}")
    line = report["error"].splitlines()[0] if report["error"] else "it failed"
    where = f" ({report['file']}, line {report.get('line')})" if report.get("file") else ""
    reason = f"{APP_MODULE} does not import: {line}{where}"
    return _result("import", run, False, reason, Counts(failed=1), (str(report.get("file")),))


async def check_tests(files: Mapping[str, str], limits: Limits) -> CheckResult:
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    argv += [f"--junitxml={RESULT}", "-o", "junit_family=xunit2"]
    env = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    run = await run_sandboxed(files, argv, limits, env=env, want_result=True)
    junit = _junit(run.result)
    counts, cases = junit if junit else (Counts(), ())
    failing = tuple(".".join(filter(None, case)) for case in cases)
    names = [name for _, name in cases]
    failed = counts.failed + counts.errors
    fail_words = f"{failed} of {counts.total} generated tests fail: {_names(names)}"
    if run.stopped_by:
        assert run.stopped is not None
        reason = f"the test suite was stopped: {run.stopped}"
        reason += f" ({fail_words})" if failed else ""
        return _result("tests", run, False, reason, counts, failing)
    if junit is None:
        return _broken("tests", run, "running the tests")
    if failed:
        return _result("tests", run, False, fail_words, counts, failing)
    if counts.total == 0:
        return _result("tests", run, False, "the project has no tests: pytest collected none")
    passed = f"{counts.passed} generated tests pass"
    if run.exit_code != 0:
        reason = f"pytest exited with status {run.exit_code} although {passed}"
        return _result("tests", run, False, f"{reason}: {_last_line(run.output)}", counts)
    skipped = f", {counts.skipped} skipped" if counts.skipped else ""
    return _result("tests", run, True, passed + skipped, counts)


CHECKS: dict[Step, Callable[[Mapping[str, str], Limits], Awaitable[CheckResult]]] = {
    "compile": check_compile,
    "import": check_import,
    "tests": check_tests,
}


def _result(
    step: Step,
    run: SandboxResult,
    ok: bool,
    reason: str,
    counts: Counts | None = None,
    failing: tuple[str, ...] = (),
) -> CheckResult:
    return CheckResult(
        step=step,
        ok=ok,
        reason=reason,
        counts=counts or Counts(),
        failing=failing,
        duration_ms=run.duration_ms,
        output=run.output,
        stopped_by=run.stopped_by,
    )


def _refused(step: Step, reason: str) -> CheckResult:
    return CheckResult(step, False, reason, Counts(), (), 0, "")


def _broken(step: Step, run: SandboxResult, doing: str) -> CheckResult:
    """A step that ended without its report: stopped by a limit, or crashed."""
    if run.stopped:
        reason = f"{doing} was stopped: {run.stopped}"
    else:
        reason = f"{doing} failed (exit status {run.exit_code}): {_last_line(run.output)}"
    return _result(step, run, False, reason)


def _junit(text: str | None) -> tuple[Counts, tuple[tuple[str, str], ...]] | None:
    """Counts and failing tests (classname, name) from pytest's JUnit XML; None if absent
    or unreadable. The XML comes from the sandbox: it is size-capped, and ElementTree resolves
    no external entity (expat >= 2.4.1 also refuses entity-expansion bombs)."""
    if not text:
        return None
    try:
        root = ElementTree.fromstring(text)  # noqa: S314 (see the docstring)
    except ElementTree.ParseError:
        return None
    tally = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    failing: list[tuple[str, str]] = []
    for case in root.iter("testcase"):
        if case.find("failure") is not None:
            tally["failed"] += 1
        elif case.find("error") is not None:
            tally["errors"] += 1
        else:
            tally["skipped" if case.find("skipped") is not None else "passed"] += 1
            continue
        failing.append((case.get("classname") or "", case.get("name") or "?"))
    return Counts(**tally), tuple(failing)


def _json(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _where(failure: Any) -> tuple[str, str]:
    path = str(failure.get("path"))
    line = failure.get("line")
    message = str(failure.get("message"))
    return path, f"line {line}: {message}" if line else message


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:NAMES_IN_REASON]) + _more(len(names))


def _more(count: int) -> str:
    return f", and {count - NAMES_IN_REASON} more" if count > NAMES_IN_REASON else ""


def _last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"
