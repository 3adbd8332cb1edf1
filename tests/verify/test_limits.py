"""service/verify/limits.py: the limits from the settings, as rlimits, told apart and in words
(no sandbox here: tests/verify/test_sandbox.py makes a command hit each limit for real)."""

from __future__ import annotations

import signal

import pytest

from service.settings import Settings
from service.verify.limits import Limit, Limits, classify

LIMITS = Limits(cpu_s=7, wall_s=8.5, memory_mb=300, processes=40, file_mb=2, disk_mb=32)


def test_the_limits_come_from_the_settings() -> None:
    settings = Settings(
        verify_cpu_s=7,
        verify_wall_s=8.5,
        verify_memory_mb=300,
        verify_processes=40,
        verify_file_mb=2,
        verify_disk_mb=32,
        verify_output_kb=4,
    )
    assert Limits.from_settings(settings) == Limits(7, 8.5, 300, 40, 2, 32, 4)
    assert Limits.from_settings(Settings()) == Limits(), "the defaults agree"


def test_the_rlimits_are_soft_equal_hard_but_the_cpu_which_kills_a_second_later() -> None:
    mb = 1024 * 1024
    assert LIMITS.rlimits() == {
        "cpu": (7, 8),
        "data": (300 * mb, 300 * mb),
        "stack": (2 * mb, 2 * mb),
        "nproc": (40, 40),
        "fsize": (2 * mb, 2 * mb),
        "nofile": (1024, 1024),
        "core": (0, 0),
    }


@pytest.mark.parametrize(
    ("limit", "words"),
    [
        ("timeout", "it ran longer than 8.5 s"),
        ("cpu", "it used more than 7 s of CPU time"),
        ("memory", "it used more than 300 MB of memory"),
        ("processes", "it started more than 40 processes and threads"),
        ("file_size", "it wrote a file larger than 2 MB"),
        ("disk", "it wrote more than 32 MB"),
        ("output", "it printed more than 16 MB"),
    ],
)
def test_each_limit_in_words(limit: Limit, words: str) -> None:
    assert LIMITS.words(limit) == words


def test_a_signal_in_words() -> None:
    assert LIMITS.words("signal", signal.SIGSEGV) == "it was killed by SIGSEGV"
    assert LIMITS.words("signal", 200) == "it was killed by signal 200"


def ended(
    *,
    timed_out: bool = False,
    overflow: bool = False,
    exit_code: int | None = None,
    signal_number: int | None = None,
    cpu_s: float | None = 0.1,
    output: str = "",
) -> Limit | None:
    return classify(
        LIMITS,
        timed_out=timed_out,
        overflow=overflow,
        exit_code=exit_code,
        signal_number=signal_number,
        cpu_s=cpu_s,
        output=output,
    )


def test_the_wall_clock_and_the_output_cap_win_over_what_the_command_says() -> None:
    assert ended(timed_out=True, overflow=True, output="MemoryError") == "timeout"
    assert ended(overflow=True, signal_number=signal.SIGXCPU) == "output"


def test_signals_name_cpu_file_size_or_themselves() -> None:
    assert ended(signal_number=signal.SIGXCPU) == "cpu"
    assert ended(signal_number=signal.SIGKILL, cpu_s=7.0) == "cpu"  # the hard limit
    assert ended(signal_number=signal.SIGKILL, cpu_s=1.0) == "signal"
    assert ended(signal_number=signal.SIGXFSZ) == "file_size"
    assert ended(signal_number=signal.SIGSEGV) == "signal"


def test_a_failed_call_in_the_output_names_the_first_limit_hit() -> None:
    fork = "BlockingIOError: [Errno 11] Resource temporarily unavailable"
    assert ended(exit_code=1, output=f"{fork}\n...\nMemoryError\n") == "processes"
    assert ended(exit_code=1, output="RuntimeError: can't start new thread") == "processes"
    assert ended(exit_code=1, output="MemoryError\n" + fork) == "memory"
    assert ended(exit_code=1, output="OSError: [Errno 27] File too large") == "file_size"
    assert ended(exit_code=1, output="OSError: [Errno 28] No space left on device") == "disk"
    assert ended(exit_code=1, output="AssertionError") is None


def test_a_command_that_succeeded_hit_no_limit_whatever_it_printed() -> None:
    assert ended(exit_code=0, output="MemoryError (caught and handled)") is None
