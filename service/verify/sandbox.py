"""Run a command over a project's files in a bubblewrap sandbox, with limits, without blocking.

Generated code is untrusted. ``run_sandboxed`` starts Debian's ``bwrap`` (bubblewrap) as a
child process of the event loop (``asyncio.create_subprocess_exec``: a hung or hostile command
costs the loop a pipe to read, never a blocked call) and gives the command:

- **no network**: a network namespace of its own, holding only a loopback interface that
  nothing listens on (``--unshare-net``); PID, IPC, UTS and cgroup namespaces of its own too,
  so it sees only its own processes;
- **a read-only view of the interpreter**: ``/usr`` (libraries), the Python installation and
  the virtualenv (``sys.base_prefix``, ``sys.prefix``), bound read-only at the paths the
  interpreter knows them by, and nothing else of the host: no ``/etc``, no home, no service
  tree (the editable install's ``service`` package does not import there), a fresh ``/proc``
  and a minimal ``/dev``;
- **one writable place**: a private tmpfs on ``/tmp`` of ``GENSTREAM_VERIFY_DISK_MB``, holding
  the project (``/tmp/project``, the command's directory) and ``HOME``; it vanishes with the
  sandbox, so nothing the command writes reaches the host. All else is read-only, bwrap's own
  root and ``/dev`` included (unprivileged, they would be writable tmpfs without a size);
- **no environment of the service**: bwrap itself starts with an empty environment and
  ``--clearenv``; the command gets PATH, HOME, LANG, TMPDIR, PYTHONDONTWRITEBYTECODE,
  PYTHONHASHSEED and what the caller adds (no database URL, no API key);
- **limits** (``limits.py``): set by the supervisor (``inside.py``) on itself before it
  starts the command, and wall time here: at ``wall_s`` bwrap's process group is SIGKILLed,
  bwrap's PID 1 dies with it (``--die-with-parent``) and the kernel kills every process of
  the sandbox's PID namespace. A command that prints more than 16 MB is stopped the same way
  (reading it would cost the loop); the last ``output_kb`` are kept.

**As root**, bwrap makes no user namespace (in one made by root, every uid is still kernel
uid 0, for which RLIMIT_NPROC is not enforced): its command is ``setpriv`` (util-linux), which
drops to a fresh unprivileged uid and gid (random in 2^30 + [0, 2^24); no account has them,
so sandboxes running at once do not share a process count), clears the supplementary groups,
every capability and the bounding set, and sets no_new_privs before the interpreter starts.
Not root, bwrap makes a user namespace (and forbids nested ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.files import check_path
from service.verify.limits import OUTPUT_STOP_BYTES, Limit, Limits, classify

HOME = "/tmp"  # noqa: S108 (the sandbox's own tmpfs, not the host's /tmp)
PROJECT = f"{HOME}/project"
RESULT = f"{HOME}/.verify/result"  # where a command may leave its result for the caller
RESULT_MAX_BYTES = 1024 * 1024
REPORT_MAX_BYTES = 6 * RESULT_MAX_BYTES + 4096  # the result as JSON: \uXXXX is 6 bytes a char
UID_BASE, UID_SPAN = 1 << 30, 1 << 24
SUPERVISOR = (Path(__file__).parent / "inside.py").read_text()


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot make a sandbox here; the message says what to do."""


@dataclass(frozen=True)
class SandboxResult:
    """How a command ended. ``stopped_by`` names the limit that ended or broke it, if any, and
    ``stopped`` says it in words; ``result`` is what it left at ``RESULT`` (capped)."""

    exit_code: int | None  # None: it ended by a signal or was killed
    signal: int | None
    stopped_by: Limit | None
    stopped: str | None
    duration_ms: int
    cpu_s: float | None  # the command's CPU time, its waited-for children included
    output: str  # the tail of stdout and stderr together
    output_bytes: int  # all it printed
    result: str | None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.stopped_by is None


def find_bwrap() -> str:
    found = shutil.which("bwrap")
    if not found:
        raise SandboxUnavailable(
            "bubblewrap is not installed: run `make sandbox` as root (apt-get install bubblewrap)"
        )
    return found


def sandbox_command(
    bwrap: str, report_fd: int, limits: Limits, env: Mapping[str, str] | None = None
) -> list[str]:
    """The bwrap command line that runs the supervisor (the isolation the docstring lists)."""
    args = [bwrap, "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--die-with-parent", "--new-session"]
    privileged = os.geteuid() == 0
    if not privileged:
        args += ["--unshare-user", "--disable-userns"]
    args += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        host = f"/{name}"
        if os.path.islink(host):
            args += ["--symlink", os.readlink(host), host]
        elif os.path.isdir(host):
            args += ["--ro-bind", host, host]
    args += ["--proc", "/proc", "--dev", "/dev"]
    args += ["--perms", "1777", "--size", str(limits.disk_mb * 1024 * 1024), "--tmpfs", HOME]
    made: set[str] = {"/", "/usr", HOME}
    for root in interpreter_roots():
        # bwrap makes a missing parent 0700, which the unprivileged user could not cross.
        for parent in reversed(Path(root).parents):
            if str(parent) not in made and not _inside(str(parent), "/usr"):
                args += ["--perms", "0755", "--dir", str(parent)]
                made.add(str(parent))
        args += ["--ro-bind", os.path.realpath(root), root]
    # bwrap's own tmpfs (the root, /dev) would be writable without a size when bwrap runs
    # unprivileged in a user namespace: read-only, /tmp stays the one writable place.
    args += ["--remount-ro", "/", "--remount-ro", "/dev"]
    args += ["--chdir", HOME, "--clearenv"]
    for name, value in {**sandbox_environment(), **(env or {})}.items():
        args += ["--setenv", name, value]
    if privileged:
        uid = str(UID_BASE + random.randrange(UID_SPAN))
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        args += [setpriv, "--reuid", uid, "--regid", uid, "--clear-groups"]
        args += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    return [*args, sys.executable, "-I", "-S", "-c", SUPERVISOR, str(report_fd)]


def interpreter_roots() -> list[str]:
    """The directories this interpreter runs from, outside ``/usr`` (bound whole), each once."""
    candidates = {
        os.path.abspath(path)
        for path in (
            sys.prefix,
            sys.exec_prefix,
            sys.base_prefix,
            sys.base_exec_prefix,
            os.path.dirname(os.path.realpath(sys.executable)),
        )
    }
    outside = {path for path in candidates if not _inside(path, "/usr")}
    return sorted(p for p in outside if not any(p != q and _inside(p, q) for q in outside))


def sandbox_environment() -> dict[str, str]:
    bin_dir = os.path.dirname(sys.executable)
    return {
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "HOME": HOME,
        "TMPDIR": HOME,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }


async def run_sandboxed(
    files: Mapping[str, str],
    argv: Sequence[str],
    limits: Limits,
    *,
    env: Mapping[str, str] | None = None,
    want_result: bool = False,
) -> SandboxResult:
    """Write ``files`` into a fresh sandbox's ``/tmp/project`` and run ``argv`` there.

    Raises ``FileRefused`` for a path genstream would not store, ``SandboxUnavailable`` when
    bwrap is missing or fails to build the sandbox; a command that fails is a result, never an
    exception. Cancelling the caller kills the sandbox.
    """
    for path in files:
        check_path(path)
    bwrap = find_bwrap()
    request = json.dumps(
        {
            "files": dict(files),
            "project": PROJECT,
            "argv": list(argv),
            "limits": limits.rlimits(),
            "result": RESULT if want_result else None,
            "result_bytes": RESULT_MAX_BYTES,
        }
    ).encode()
    report_read, report_write = os.pipe()
    started = time.monotonic()
    try:
        process = await asyncio.create_subprocess_exec(
            *sandbox_command(bwrap, report_write, limits, env),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            pass_fds=(report_write,),
            start_new_session=True,  # one process group to kill: bwrap's
            env={},  # bwrap needs none, and its PID 1 would keep what it is given
        )
    except BaseException:
        os.close(report_read)
        raise
    finally:
        os.close(report_write)
    report_reader = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(report_reader), os.fdopen(report_read, "rb", 0)
    )
    assert process.stdin is not None
    assert process.stdout is not None
    output = asyncio.create_task(_tail(process.stdout, limits.output_kb * 1024))
    report = asyncio.create_task(_read_capped(report_reader, REPORT_MAX_BYTES))
    feeder = asyncio.create_task(_feed(process.stdin, request))
    finished = asyncio.create_task(_finish(process, output))
    try:
        done, _ = await asyncio.wait({finished}, timeout=limits.wall_s)
        timed_out = not done
    finally:
        # The sandbox ends here, whatever ended the wait: its time is up, it printed too much,
        # it ended by itself, or the caller was cancelled (then these awaits are a moment: a
        # killed sandbox closes every pipe). What is left of its output is read to the end
        # BEFORE waiting: Python 3.11's wait() returns only once every pipe is closed.
        _kill(process)
        await finished
        await process.stdout.read()
        await feeder
        await process.wait()
        report_bytes = await report
        transport.close()
    tail, total = output.result()
    duration_ms = round((time.monotonic() - started) * 1000)
    return _result(
        limits,
        timed_out=timed_out,
        bwrap_status=process.returncode,
        report=_parse_report(report_bytes),
        tail=tail,
        total=total,
        duration_ms=duration_ms,
    )


def _result(
    limits: Limits,
    *,
    timed_out: bool,
    bwrap_status: int | None,
    report: dict[str, Any] | None,
    tail: bytes,
    total: int,
    duration_ms: int,
) -> SandboxResult:
    text = tail.decode("utf-8", errors="replace")
    overflow = total > OUTPUT_STOP_BYTES
    exit_code: int | None = None
    signal_number: int | None = None
    cpu_s: float | None = None
    result: str | None = None
    if report is not None:
        cpu_s = report.get("cpu_s")
        signal_number = report.get("signal")
        exit_code = report.get("exit_code")
        result = report.get("result")
        if "error" in report:
            exit_code, text = 127, f"{text}{report['error']}\n"
    elif not timed_out and not overflow:
        if text.startswith("bwrap:"):
            raise SandboxUnavailable(text.strip().splitlines()[0])
        exit_code = bwrap_status  # the supervisor itself was killed: bwrap says how
    stopped_by = classify(
        limits,
        timed_out=timed_out,
        overflow=overflow,
        exit_code=exit_code,
        signal_number=signal_number,
        cpu_s=cpu_s,
        output=text,
    )
    return SandboxResult(
        exit_code=exit_code,
        signal=signal_number,
        stopped_by=stopped_by,
        stopped=limits.words(stopped_by, signal_number) if stopped_by else None,
        duration_ms=duration_ms,
        cpu_s=cpu_s,
        output=text,
        output_bytes=total,
        result=result,
    )


def _parse_report(raw: bytes) -> dict[str, Any] | None:
    try:
        report = json.loads(raw)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


async def _tail(stream: asyncio.StreamReader, keep: int) -> tuple[bytes, int]:
    """The last ``keep`` bytes of the stream and how many it held; it stops reading (the
    caller then kills the writer) past OUTPUT_STOP_BYTES."""
    tail = bytearray()
    total = 0
    while chunk := await stream.read(65536):
        total += len(chunk)
        tail += chunk
        if len(tail) > 2 * keep:
            del tail[:-keep]
        if total > OUTPUT_STOP_BYTES:
            break
    return bytes(tail[-keep:]), total


async def _finish(
    process: asyncio.subprocess.Process, output: asyncio.Task[tuple[bytes, int]]
) -> None:
    """Returns once the command has ended and its output is read, or at the output cap (its
    output unread, the command cannot end: the caller kills it)."""
    _, total = await output
    if total <= OUTPUT_STOP_BYTES:
        await process.wait()


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> bytes:
    """The first ``cap`` bytes; the rest is read and dropped, so the writer never blocks."""
    data = bytearray()
    while chunk := await stream.read(65536):
        data += chunk[: max(0, cap - len(data))]
    return bytes(data)


async def _feed(stdin: asyncio.StreamWriter, request: bytes) -> None:
    try:
        stdin.write(request)
        with contextlib.suppress(ConnectionError):  # the sandbox ended before reading it all
            await stdin.drain()
    finally:
        stdin.close()


def _kill(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")
