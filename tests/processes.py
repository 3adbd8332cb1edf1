"""Helpers for tests that run genstream as real processes: ports, exits, shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time

STOP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    """The exit code, or None if the process is still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (code := proc.poll()) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return code


async def terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still there after STOP_TIMEOUT_S."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        if await wait_exit(proc, STOP_TIMEOUT_S) is None:
            proc.kill()
    await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
