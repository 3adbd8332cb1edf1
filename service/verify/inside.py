"""The sandbox's first process: it writes the project, lowers the limits, runs the command and
reports how the command ended. It runs INSIDE bubblewrap, as the sandbox's unprivileged user,
started by ``sandbox.py`` as ``python -I -S -c <this file's text> REPORT_FD``, so it may use
the standard library only and must not import genstream.

It reads one JSON object on stdin: ``files`` (path -> text, written under ``project``), the
``argv`` to run there, ``limits`` (resource name -> value, applied to itself and so inherited by
the command), ``result`` (a file the command may write) and ``result_bytes`` (how much of it
to send back). It answers with one JSON object on REPORT_FD once the command has ended:
``exit_code`` or ``signal``, ``cpu_s`` (the command's CPU time, its waited-for children
included), ``result`` (the file's text or null), or ``error`` when the command could not start.

Why a supervisor rather than ``exec``: the report travels on a descriptor the command never
sees (``close_fds``), the exit status comes from ``wait4`` with the command's CPU time, and
when the command ends, whatever it left running is killed before the report is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
from typing import Any

RESOURCES = {
    "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA,
    "nproc": resource.RLIMIT_NPROC,
    "fsize": resource.RLIMIT_FSIZE,
    "stack": resource.RLIMIT_STACK,
    "nofile": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
}


def write_files(root: str, files: dict[str, str]) -> None:
    for path, text in files.items():
        target = os.path.join(root, path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as file:
            file.write(text)


def lower_limits(limits: dict[str, list[int]]) -> None:
    """Soft and hard limits both, so the command cannot raise them again; never above a
    hard limit this process was already given (only root may raise one)."""
    for name, (soft, hard) in limits.items():
        kind = RESOURCES[name]
        _, current_hard = resource.getrlimit(kind)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        resource.setrlimit(kind, (soft, hard))


def read_capped(path: str, limit: int) -> str | None:
    try:
        with open(path, "rb") as file:
            return file.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return None


def run(request: dict[str, Any]) -> dict[str, Any]:
    root = request["project"]
    os.makedirs(root, exist_ok=True)
    write_files(root, request["files"])
    if request["result"]:
        os.makedirs(os.path.dirname(request["result"]), exist_ok=True)
    lower_limits(request["limits"])
    try:
        child = subprocess.Popen(
            request["argv"], cwd=root, env={**os.environ, "PWD": root}, stdin=subprocess.DEVNULL
        )
    except OSError as error:
        return {"error": f"{request['argv'][0]} did not start: {error}"}
    _, status, usage = os.wait4(child.pid, 0)
    # What the command left behind (a fork that outlived it) ends here, before the report:
    # kill(-1) reaches every process of this user in the sandbox's PID namespace but this one.
    with contextlib.suppress(OSError):  # none was left
        os.kill(-1, signal.SIGKILL)
    report: dict[str, Any] = {"cpu_s": round(usage.ru_utime + usage.ru_stime, 3)}
    if os.WIFSIGNALED(status):
        report["signal"] = os.WTERMSIG(status)
    else:
        report["exit_code"] = os.WEXITSTATUS(status)
    if request["result"]:
        report["result"] = read_capped(request["result"], request["result_bytes"])
    return report


def main() -> None:
    report_fd = int(sys.argv[1])
    request = json.loads(sys.stdin.buffer.read())
    report = run(request)
    with os.fdopen(report_fd, "wb") as channel:
        channel.write(json.dumps(report).encode())


if __name__ == "__main__":
    main()
