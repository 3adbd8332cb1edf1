"""service/verify/sandbox.py: what a command sees in the sandbox, and each limit stopping it.

The commands are small Python programs; tests/verify/test_checks.py runs whole generated test
suites. Those that hit a limit on purpose (CPU, wall time, memory, processes) are slow.
"""

from __future__ import annotations

import ast
import asyncio
import os
import socket
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest

from service.files import FileRefused
from service.settings import PROJECT_ROOT
from service.verify.limits import OUTPUT_STOP_BYTES, Limits
from service.verify.sandbox import (
    PROJECT,
    SandboxResult,
    SandboxUnavailable,
    interpreter_roots,
    run_sandboxed,
)
from tests.verify.sandboxes import SMALL, processes_with, token

FILES = {"data/hello.txt": "hello\n", "pkg/__init__.py": "VALUE = 41\n"}


async def python(code: str, limits: Limits = SMALL) -> SandboxResult:
    return await run_sandboxed(FILES, [sys.executable, "-c", code], limits)


async def test_the_command_runs_in_the_project_with_its_files() -> None:
    result = await python(
        "import os, pkg; print(os.getcwd(), open('data/hello.txt').read().strip(), pkg.VALUE + 1)"
    )
    assert result.ok, result
    assert result.output == f"{PROJECT} hello 42\n"
    assert (result.exit_code, result.stopped_by, result.stopped) == (0, None, None)
    assert result.cpu_s is not None
    assert 0 < result.duration_ms < 10_000


async def test_a_failing_command_is_a_result_with_its_exit_code_and_output() -> None:
    result = await python("import sys; print('about to fail'); sys.exit(3)")
    assert not result.ok
    assert (result.exit_code, result.stopped_by) == (3, None)
    assert result.output == "about to fail\n"


async def test_the_command_runs_as_an_unprivileged_user_without_capabilities() -> None:
    result = await python(
        "import os; status = open('/proc/self/status').read(); "
        "print(os.getuid(), os.getgid(), os.getgroups()); "
        "print([line for line in status.splitlines() if line.startswith(('Cap', 'NoNewPrivs'))])"
    )
    assert result.ok, result.output
    ids, capabilities = result.output.splitlines()
    uid, gid, groups = ids.split(" ", 2)
    assert int(uid) != 0
    assert int(gid) != 0
    assert groups == "[]"
    for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert f"'{name}:\\t0000000000000000'" in capabilities
    assert "'NoNewPrivs:\\t1'" in capabilities


async def test_the_command_sees_the_interpreter_read_only_and_nothing_of_the_service() -> None:
    result = await python(
        "import os, sys\n"
        "print(sorted(os.listdir('/')))\n"
        f"root = {str(PROJECT_ROOT)!r}\n"
        "print(sorted(os.listdir(root)) if os.path.isdir(root) else [])\n"
        "import litestar, pydantic, pytest, httpx\n"
        "try:\n"
        "    import service\n"
        "except ImportError as error:\n"
        "    print(type(error).__name__)\n"
        "for path in [sys.prefix, '/usr', '/', '/etc']:\n"
        "    try:\n"
        "        open(os.path.join(path, 'written'), 'w')\n"
        "    except OSError as error:\n"
        "        print(path, error.strerror)\n"
    )
    assert result.ok, result.output
    listing, tree, error, *refused = result.output.splitlines()
    links = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
    system = {"dev", "proc", "tmp", "usr"} | {name for name in links if Path("/", name).exists()}
    leading = {Path(root).parts[1] for root in interpreter_roots()}  # /root/.pyenv/..., /work/...
    assert set(ast.literal_eval(listing)) == system | leading
    # Of genstream's own tree, only the virtualenv (when it lives there) is in the sandbox.
    venv = Path(sys.prefix)
    inside = [venv.relative_to(PROJECT_ROOT).parts[0]] if venv.is_relative_to(PROJECT_ROOT) else []
    assert ast.literal_eval(tree) == inside
    assert error == "ModuleNotFoundError"
    assert refused == [
        f"{sys.prefix} Read-only file system",
        "/usr Read-only file system",
        "/ Read-only file system",
        "/etc No such file or directory",
    ]


async def test_the_environment_is_minimal_and_holds_nothing_of_the_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://genstream:db-password-1@db/genstream")
    monkeypatch.setenv("GEMINI_API_KEY", "gemini-key-2")
    monkeypatch.setenv("GENSTREAM_OPENAI_API_KEY", "openai-key-3")
    result = await python(
        "import os, pathlib\n"
        "print(sorted(os.environ))\n"
        "for environ in pathlib.Path('/proc').glob('*/environ'):\n"
        "    try:\n"
        "        print(environ, environ.read_bytes())\n"
        "    except OSError as error:\n"
        "        print(environ, error.strerror)\n"
    )
    assert result.ok, result.output
    names = result.output.splitlines()[0]
    assert ast.literal_eval(names) == sorted(
        ["HOME", "LANG", "PATH", "PWD", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED", "TMPDIR"]
    )
    for secret in ("db-password-1", "gemini-key-2", "openai-key-3", "DATABASE_URL", "API_KEY"):
        assert secret not in result.output


async def test_nothing_written_reaches_the_host() -> None:
    mark = token()
    host_tmp = tempfile.gettempdir()  # /tmp, also the sandbox's private tmpfs
    targets = [f"{host_tmp}/{mark}", f"{PROJECT}/{mark}", f"{PROJECT}/../../{mark}", f"/{mark}"]
    result = await python(
        "import os, sys\n"
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('escaped')\n"
        "        print(path, 'written')\n"
        "    except OSError as error:\n"
        "        print(path, error.strerror)\n"
    )
    assert result.ok, result.output
    assert f"{host_tmp}/{mark} written" in result.output  # the sandbox's own /tmp...
    assert not os.path.exists(f"{host_tmp}/{mark}")  # ...is not the host's
    assert not os.path.exists(f"/{mark}")
    assert not list(PROJECT_ROOT.glob(f"**/{mark}"))


async def test_there_is_no_network_not_even_to_the_hosts_loopback() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        result = await python(
            "import socket\n"
            f"for address in [('127.0.0.1', {port}), ('1.1.1.1', 80)]:\n"
            "    try:\n"
            "        socket.create_connection(address, timeout=2)\n"
            "        print(address, 'connected')\n"
            "    except OSError as error:\n"
            "        print(address, type(error).__name__)\n"
            "try:\n"
            "    socket.getaddrinfo('pypi.org', 443)\n"
            "except OSError as error:\n"
            "    print('dns', type(error).__name__)\n"
        )
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody came
    assert result.ok, result.output
    assert result.output.splitlines() == [
        f"('127.0.0.1', {port}) ConnectionRefusedError",
        "('1.1.1.1', 80) OSError",  # Network is unreachable
        "dns gaierror",
    ]


async def test_a_file_path_genstream_would_not_store_is_refused() -> None:
    with pytest.raises(FileRefused, match=r"'\.\.' segment"):
        await run_sandboxed({"../escape.py": ""}, [sys.executable, "-c", "pass"], SMALL)


async def test_without_bwrap_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SandboxUnavailable, match="make sandbox"):
        await python("pass")


async def test_the_output_keeps_its_tail() -> None:
    result = await python(
        "for n in range(20000):\n    print(f'line {n}')\n", replace(SMALL, output_kb=1)
    )
    assert result.ok
    assert result.output_bytes == sum(len(f"line {n}\n") for n in range(20000))
    assert len(result.output) == 1024
    assert result.output.endswith("line 19998\nline 19999\n")


async def test_a_file_larger_than_the_limit_cannot_be_written() -> None:
    result = await python("open('big', 'wb').write(b'x' * (2 * 1024 * 1024))")
    assert result.stopped_by == "file_size", result.output
    assert result.stopped == "it wrote a file larger than 1 MB"
    assert "File too large" in result.output


async def test_the_private_tmpfs_holds_no_more_than_its_size() -> None:
    result = await python(
        "for n in range(100):\n    open(f'part{n}', 'wb').write(b'x' * 1024 * 1024)\n"
    )
    assert result.stopped_by == "disk", result.output
    assert result.stopped == "it wrote more than 16 MB"


async def test_endless_output_is_stopped_and_its_tail_kept() -> None:
    result = await python("while True:\n    print('spam ' * 1000)\n")
    assert result.stopped_by == "output"
    assert result.stopped == "it printed more than 16 MB"
    assert result.output_bytes > OUTPUT_STOP_BYTES
    assert result.output.count("spam") > 10_000


@pytest.mark.slow
async def test_a_busy_loop_is_stopped_by_the_cpu_limit() -> None:
    result = await python("while True:\n    pass\n", replace(SMALL, cpu_s=1))
    assert result.stopped_by == "cpu"
    assert result.stopped == "it used more than 1 s of CPU time"
    assert result.exit_code is None
    assert result.cpu_s is not None
    assert result.cpu_s >= 0.9
    assert result.duration_ms < 10_000


@pytest.mark.slow
async def test_a_sleeping_command_is_killed_at_the_wall_time_with_all_its_processes() -> None:
    mark = token()
    code = f"import os, time\nos.fork()\nos.fork()\ntime.sleep(600)  # {mark}\n"
    started = time.monotonic()
    result = await python(code, replace(SMALL, wall_s=1.5))
    assert 1.5 <= time.monotonic() - started < 5
    assert result.stopped_by == "timeout"
    assert result.stopped == "it ran longer than 1.5 s"
    assert processes_with(mark) == []


@pytest.mark.slow
async def test_allocating_without_end_is_stopped_by_the_memory_limit() -> None:
    result = await python(
        "chunks = []\nwhile True:\n    chunks.append(bytearray(10 * 1024 * 1024))\n"
    )
    assert result.stopped_by == "memory", result.output
    assert result.stopped == "it used more than 256 MB of memory"
    assert result.output.rstrip().endswith("MemoryError")


@pytest.mark.slow
async def test_forking_without_end_is_stopped_by_the_process_limit_even_as_root() -> None:
    """The kernel never applies RLIMIT_NPROC to uid 0; the sandbox's user is not root."""
    result = await python(
        "import os, time\n"
        "count = 0\n"
        "while True:\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(600)\n"
        "    count += 1\n"
        "    print(count, flush=True)\n"
    )
    assert result.stopped_by == "processes", result.output
    assert result.stopped == "it started more than 32 processes and threads"
    assert "BlockingIOError: [Errno 11] Resource temporarily unavailable" in result.output
    forked = int(result.output.split("Traceback")[0].split()[-1])
    assert 16 <= forked < 32  # the sandbox's other processes count too


async def test_cancelling_the_caller_kills_the_sandbox() -> None:
    mark = token()
    task = asyncio.create_task(python(f"import time\ntime.sleep(600)  # {mark}\n"))
    while not processes_with(mark):
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert processes_with(mark) == []


@pytest.mark.slow
async def test_the_event_loop_keeps_running_while_a_hostile_command_runs() -> None:
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        results = await asyncio.gather(
            python("while True:\n    pass\n", replace(SMALL, cpu_s=2)),
            python("import time\ntime.sleep(600)\n", replace(SMALL, wall_s=2)),
            python("while True:\n    print('x' * 10000)\n"),
        )
    finally:
        ticker.cancel()
    assert [result.stopped_by for result in results] == ["cpu", "timeout", "output"]
    assert len(gaps) > 50
    assert max(gaps) < 0.5, f"the loop stalled for {max(gaps):.2f} s"
