"""service/verify/checks.py: the offline provider's projects pass every step; broken code fails
the step it breaks, named in words; hostile generated test suites are stopped and reported,
while the event loop carries on.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from dataclasses import replace

import pytest

from bench.cases.verify import spec_of
from service.generation.providers.offline import STAGES, render_phase
from service.settings import PROJECT_ROOT
from service.spec import Spec
from service.verify.checks import (
    STEPS,
    CheckResult,
    Counts,
    check_compile,
    check_import,
    check_tests,
    summary,
    verify,
)
from service.verify.limits import Limits
from tests.verify.sandboxes import SMALL, processes_with, project, token

# The generated suites import litestar: more room than SMALL, still far below the defaults.
SUITE = replace(SMALL, cpu_s=60, wall_s=100, memory_mb=1024, processes=256)


def offline_files(spec: Spec) -> dict[str, str]:
    return {file.path: file.content for stage in STAGES for file in render_phase(spec, stage)}


async def all_steps(files: dict[str, str], limits: Limits = SUITE) -> list[CheckResult]:
    return [result async for result in verify(files, limits)]


@pytest.mark.slow
@pytest.mark.parametrize("entities", [1, 3, 10])
async def test_the_offline_project_passes_every_step(entities: int) -> None:
    files = offline_files(spec_of(entities))
    results = await all_steps(files)
    assert [result.step for result in results] == list(STEPS)
    assert all(result.ok for result in results), [(r.reason, r.output) for r in results]
    compiled, imported, tested = (result.counts for result in results)
    python = sum(path.endswith(".py") for path in files)
    assert compiled == Counts(passed=python)
    assert imported == Counts(passed=1)
    assert tested.passed >= 5 * entities
    assert (tested.failed, tested.errors, tested.skipped) == (0, 0, 0)
    assert summary(results) == (
        f"{python} Python files compile; app.main imports; {tested.passed} generated tests pass"
    )
    assert all(result.failing == () and result.stopped_by is None for result in results)


async def test_a_syntax_error_fails_compile_naming_the_file_and_line_and_nothing_runs() -> None:
    files = project("def test_ok():\n    pass\n")
    files["app/models.py"] = "class User:\n    name: str\n\ndef broken(:\n    pass\n"
    results = await all_steps(files)
    assert [result.step for result in results] == ["compile"]
    (result,) = results
    assert not result.ok
    assert result.reason == "app/models.py does not compile: line 4: invalid syntax"
    assert result.failing == ("app/models.py",)
    assert result.counts == Counts(passed=4, failed=1)
    assert summary(results) == result.reason


async def test_several_files_that_do_not_compile_are_all_named() -> None:
    files = project("def test_ok(:\n    pass\n")
    files["app/main.py"] = "if True:\nprint('x')\n"
    result = await check_compile(files, SMALL)
    assert result.reason == (
        "2 of 4 Python files do not compile: app/main.py: line 2: expected an indented block "
        "after 'if' statement on line 1; tests/test_generated.py: line 1: invalid syntax"
    )
    assert result.failing == ("app/main.py", "tests/test_generated.py")


async def test_an_app_module_that_does_not_import_is_named_with_its_line() -> None:
    files = project("def test_ok():\n    pass\n", app="import os\nfrom app import missing\n")
    results = await all_steps(files)
    assert [(result.step, result.ok) for result in results] == [
        ("compile", True),
        ("import", False),
    ]
    assert results[1].reason == (
        "app.main does not import: ImportError: cannot import name 'missing' from 'app' "
        "(/tmp/project/app/__init__.py) (app/main.py, line 2)"
    )
    assert "Traceback" in results[1].output


async def test_a_project_without_its_app_module_fails_import() -> None:
    files = project("def test_ok():\n    pass\n")
    del files["app/main.py"]
    result = await check_import(files, SMALL)
    assert (result.ok, result.reason) == (False, "the project has no app/main.py, its app module")


async def test_failing_tests_are_named_and_counted() -> None:
    tests = """
        import pytest

        def test_order_total():
            assert 2 + 2 == 5

        def test_user_email():
            raise ValueError("no email")

        @pytest.fixture
        def broken():
            raise RuntimeError("fixture")

        def test_with_broken_fixture(broken):
            pass

        def test_passes():
            pass

        @pytest.mark.skip(reason="later")
        def test_skipped():
            pass
    """
    result = await check_tests(project(tests), SMALL)
    assert not result.ok
    assert result.counts == Counts(passed=1, failed=2, errors=1, skipped=1)
    assert result.reason == (
        "3 of 5 generated tests fail: test_order_total, test_user_email, test_with_broken_fixture"
    )
    assert result.failing == (
        "tests.test_generated.test_order_total",
        "tests.test_generated.test_user_email",
        "tests.test_generated.test_with_broken_fixture",
    )
    assert "assert (2 + 2) == 5" in result.output


async def test_more_failing_tests_than_the_reason_names_are_counted() -> None:
    tests = "".join(f"def test_{n}():\n    assert False\n\n" for n in range(8))
    result = await check_tests(project(tests), SMALL)
    assert result.reason == (
        "8 of 8 generated tests fail: test_0, test_1, test_2, test_3, test_4, and 3 more"
    )
    assert len(result.failing) == 8


async def test_a_project_without_tests_fails_the_tests_step() -> None:
    result = await check_tests(project("X = 1\n"), SMALL)
    assert (result.ok, result.reason) == (False, "the project has no tests: pytest collected none")


async def test_a_test_module_that_does_not_import_is_a_failing_test() -> None:
    result = await check_tests(project("import nothing_here\n\ndef test_ok():\n    pass\n"), SMALL)
    assert not result.ok
    assert result.counts.errors == 1
    assert result.reason == "1 of 1 generated tests fail: tests.test_generated"
    assert "ModuleNotFoundError: No module named 'nothing_here'" in result.output


async def test_a_suite_that_exits_badly_though_its_tests_pass_fails() -> None:
    files = project("def test_ok():\n    pass\n")
    files["tests/conftest.py"] = (
        "import pytest\n\n@pytest.hookimpl\ndef pytest_sessionfinish(session):\n"
        "    session.exitstatus = 3\n"
    )
    result = await check_tests(files, SMALL)
    assert not result.ok
    assert result.reason.startswith("pytest exited with status 3 although 1 generated tests pass")


# --- hostile generated tests: each is stopped, and said so in words ---------------------------


async def test_a_generated_test_cannot_open_a_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        tests = f"""
            import socket

            def test_reaches_the_host():
                socket.create_connection(("127.0.0.1", {port}), timeout=2)

            def test_reaches_the_internet():
                socket.create_connection(("1.1.1.1", 443), timeout=2)

            def test_resolves_a_name():
                socket.getaddrinfo("pypi.org", 443)
        """
        result = await check_tests(project(tests), SMALL)
        with pytest.raises(BlockingIOError):
            server.accept()
    assert result.reason == (
        "3 of 3 generated tests fail: test_reaches_the_host, test_reaches_the_internet, "
        "test_resolves_a_name"
    )
    assert "ConnectionRefusedError" in result.output
    assert "Network is unreachable" in result.output


async def test_a_generated_test_cannot_read_the_services_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://genstream:db-password-1@db:5432/genstream")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-2")
    tests = """
        import os, pathlib

        def test_steals_the_environment():
            seen = dict(os.environ)
            for environ in pathlib.Path("/proc").glob("*/environ"):
                try:
                    seen[str(environ)] = environ.read_bytes()
                except OSError as error:
                    seen[str(environ)] = error.strerror
            assert "DATABASE_URL" in seen, seen
    """
    result = await check_tests(project(tests), SMALL)
    assert result.reason == "1 of 1 generated tests fail: test_steals_the_environment"
    assert "'PATH': " in result.output  # what it saw is in the output...
    for secret in ("db-password-1", "gemini-key-2", "GEMINI_API_KEY"):
        assert secret not in result.output  # ...and holds nothing of the service


async def test_a_generated_test_cannot_write_outside_its_directory() -> None:
    mark = token()
    outside = [
        str(PROJECT_ROOT / mark),
        os.path.join(tempfile.gettempdir(), mark),
        f"/{mark}",
        f"/root/{mark}",
    ]
    tests = f"""
        def test_writes_everywhere():
            written = []
            for path in {outside!r}:
                try:
                    with open(path, "w") as file:
                        file.write("escaped")
                    written.append(path)
                except OSError:
                    pass
            assert not written, written
    """
    result = await check_tests(project(tests), SMALL)
    # Inside, the host's temp folder is the sandbox's own /tmp: the write lands there, and
    # nowhere else; on the host, nothing appears at any of the paths.
    assert result.reason == "1 of 1 generated tests fail: test_writes_everywhere", result.output
    assert f"AssertionError: ['{outside[1]}']" in result.output
    assert [path for path in outside if os.path.exists(path)] == []


@pytest.mark.slow
async def test_a_generated_test_forking_without_end_is_stopped_by_the_process_limit() -> None:
    mark = token()
    tests = f"""
        import os

        def test_forks_without_end():  # {mark}
            while True:
                os.fork()
    """
    result = await check_tests(project(tests), SMALL)
    assert result.stopped_by == "processes", result.output
    assert result.reason.startswith(
        "the test suite was stopped: it started more than 32 processes and threads"
    )
    assert processes_with(mark) == []


@pytest.mark.slow
async def test_a_generated_test_allocating_without_end_is_stopped_by_the_memory_limit() -> None:
    tests = """
        def test_allocates_without_end():
            chunks = []
            while True:
                chunks.append(bytearray(10 * 1024 * 1024))
    """
    result = await check_tests(project(tests), SMALL)
    assert result.stopped_by == "memory", result.output
    assert result.reason == (
        "the test suite was stopped: it used more than 256 MB of memory "
        "(1 of 1 generated tests fail: test_allocates_without_end)"
    )
    assert result.counts == Counts(failed=1)
    assert result.failing == ("tests.test_generated.test_allocates_without_end",)


@pytest.mark.slow
async def test_a_generated_test_looping_for_ever_is_stopped_by_the_cpu_limit() -> None:
    tests = "def test_loops_for_ever():\n    while True:\n        pass\n"
    result = await check_tests(project(tests), replace(SMALL, cpu_s=2))
    assert result.stopped_by == "cpu"
    assert result.reason == "the test suite was stopped: it used more than 2 s of CPU time"


@pytest.mark.slow
async def test_a_generated_test_sleeping_for_ever_is_stopped_by_the_wall_time() -> None:
    mark = token()
    tests = f"import time\n\ndef test_sleeps():  # {mark}\n    time.sleep(10_000)\n"
    result = await check_tests(project(tests), replace(SMALL, wall_s=3))
    assert result.stopped_by == "timeout"
    assert result.reason == "the test suite was stopped: it ran longer than 3 s"
    assert processes_with(mark) == []


@pytest.mark.slow
async def test_the_event_loop_keeps_ticking_while_hostile_suites_run() -> None:
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    forks = "import os\n\ndef test_forks():\n    while True:\n        os.fork()\n"
    loops = "def test_loops():\n    while True:\n        pass\n"
    sleeps = "import time\n\ndef test_sleeps():\n    time.sleep(10_000)\n"
    ticker = asyncio.create_task(tick())
    try:
        results = await asyncio.gather(
            check_tests(project(forks), SMALL),
            check_tests(project(loops), replace(SMALL, cpu_s=3)),
            check_tests(project(sleeps), replace(SMALL, wall_s=3)),
        )
    finally:
        ticker.cancel()
    assert [result.stopped_by for result in results] == ["processes", "cpu", "timeout"]
    assert len(gaps) > 100
    assert max(gaps) < 0.5, f"the loop stalled for {max(gaps):.2f} s"
