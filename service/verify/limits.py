"""What a command in the sandbox may use, and how a limit it hit is told apart and said.

The supervisor (``inside.py``) sets them on itself before it starts the command, soft = hard so
the command cannot raise them: CPU seconds (RLIMIT_CPU; SIGXCPU, then SIGKILL a second later),
data memory of a process (RLIMIT_DATA: heap, anonymous mappings, thread stacks), processes and
threads (RLIMIT_NPROC), file size (RLIMIT_FSIZE), 1024 open files, no core files. RLIMIT_STACK
is 2 MB: glibc sizes a thread's stack by it and each stack counts in RLIMIT_DATA, and a
generated suite leaves about one thread per test (Litestar's logging queue listener), so at 8
MB a 10-entity suite mapped 1.1 GB; 2 MB holds Python's default recursion depth (1 MB did in a
trial, 512 KB did not). Wall time and output are watched by ``sandbox.py``.

**Processes as root.** The kernel does not enforce RLIMIT_NPROC for real uid 0, and bwrap's
``--unshare-user --uid N`` does not help: in a user namespace made by root, uid N is still
kernel uid 0 (tried: 100 forks under a limit of 20 all succeeded). So as root the sandbox's
command runs as a fresh unprivileged uid (``sandbox.py``); not root, the user's own uid is
counted, so the limit then also counts the user's other processes, as RLIMIT_NPROC does.

What rlimits cannot do: bound the SUM over processes. A command may run ``processes`` processes
of ``memory_mb`` each; a cgroup (``memory.max``, ``pids.max``) would bound the sandbox as a
whole, where the service may create one.

How a limit is told: a signal says CPU (SIGXCPU, or SIGKILL past the CPU time) or file size
(SIGXFSZ, which Python ignores); otherwise a Python program hit it as a failed call, and the
exception is in its output (``MemoryError``, ``BlockingIOError`` on fork, ``EFBIG``,
``ENOSPC``). That text comes from the sandbox and may lie; it only ever names why a failure
failed, never turns a failure into a pass.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from service.settings import Settings

OUTPUT_STOP_BYTES = 16 * 1024 * 1024
STACK_BYTES = 2 * 1024 * 1024
OPEN_FILES = 1024

Limit = Literal["timeout", "cpu", "memory", "processes", "file_size", "disk", "output", "signal"]

# How a Python program shows a limit it ran into without being killed for it: the call fails,
# and the exception (a test's failure, a traceback) is in the output. The earliest wins.
_MARKERS: tuple[tuple[str, Limit], ...] = (
    ("MemoryError", "memory"),
    ("[Errno 12] Cannot allocate memory", "memory"),
    ("[Errno 11] Resource temporarily unavailable", "processes"),
    ("can't start new thread", "processes"),
    ("[Errno 27] File too large", "file_size"),
    ("[Errno 28] No space left on device", "disk"),
)


@dataclass(frozen=True)
class Limits:
    """What one command in the sandbox may use (the GENSTREAM_VERIFY_* settings)."""

    cpu_s: int = 120
    wall_s: float = 180.0
    memory_mb: int = 2048
    processes: int = 512
    file_mb: int = 16
    disk_mb: int = 128
    output_kb: int = 64

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            cpu_s=settings.verify_cpu_s,
            wall_s=settings.verify_wall_s,
            memory_mb=settings.verify_memory_mb,
            processes=settings.verify_processes,
            file_mb=settings.verify_file_mb,
            disk_mb=settings.verify_disk_mb,
            output_kb=settings.verify_output_kb,
        )

    def words(self, limit: Limit, signal_number: int | None = None) -> str:
        """Why the command was stopped, as the end of a sentence: "it used more than ..."."""
        if limit == "signal":
            return f"it was killed by {_signal_name(signal_number)}"
        return {
            "timeout": f"it ran longer than {self.wall_s:g} s",
            "cpu": f"it used more than {self.cpu_s} s of CPU time",
            "memory": f"it used more than {self.memory_mb} MB of memory",
            "processes": f"it started more than {self.processes} processes and threads",
            "file_size": f"it wrote a file larger than {self.file_mb} MB",
            "disk": f"it wrote more than {self.disk_mb} MB",
            "output": f"it printed more than {OUTPUT_STOP_BYTES // 2**20} MB",
        }[limit]

    def rlimits(self) -> dict[str, tuple[int, int]]:
        """The supervisor's resource limits, soft and hard (the CPU's hard limit a second
        later: SIGXCPU first, which a program may report, then SIGKILL)."""
        mb = 1024 * 1024
        return {
            "cpu": (self.cpu_s, self.cpu_s + 1),
            "data": (self.memory_mb * mb, self.memory_mb * mb),
            "stack": (STACK_BYTES, STACK_BYTES),
            "nproc": (self.processes, self.processes),
            "fsize": (self.file_mb * mb, self.file_mb * mb),
            "nofile": (OPEN_FILES, OPEN_FILES),
            "core": (0, 0),
        }


def classify(
    limits: Limits,
    *,
    timed_out: bool,
    overflow: bool,
    exit_code: int | None,
    signal_number: int | None,
    cpu_s: float | None,
    output: str,
) -> Limit | None:
    """The limit that stopped or broke a command, if any."""
    if timed_out:
        return "timeout"
    if overflow:
        return "output"
    if signal_number is not None:
        if signal_number == signal.SIGXCPU:
            return "cpu"
        if signal_number == signal.SIGKILL and cpu_s is not None and cpu_s >= limits.cpu_s:
            return "cpu"
        return "file_size" if signal_number == signal.SIGXFSZ else "signal"
    if exit_code in (0, None):
        return None
    found = [(output.find(marker), limit) for marker, limit in _MARKERS if marker in output]
    return min(found)[1] if found else None


def _signal_name(number: int | None) -> str:
    try:
        return signal.Signals(number or 0).name
    except ValueError:
        return f"signal {number}"
