"""Server subprocesses the cases start (genstream ``serve``, the ceiling and polling servers),
and what /proc says about them: resident memory and CPU time."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.core import PROJECT_ROOT

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rss_kib(pid: int) -> int:
    """VmRSS of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class ServerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @classmethod
    async def start(
        cls,
        name: str,
        args: Sequence[str],
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        ready_path: str = "/healthz",
    ) -> ServerProcess:
        """``python <args>`` from the project root, with HOST/PORT in its environment and
        ``--host/--port`` appended for our own servers; waits until ``ready_path`` answers 200."""
        port = port or free_port()
        host = "127.0.0.1"
        log_path = log_dir / f"{name}-{port}.log"
        env = {**os.environ, "HOST": host, "PORT": str(port), **(env or {})}
        proc = _spawn([sys.executable, *args], env, log_path)
        server = cls(name, proc, host, port, log_path)
        try:
            await server._wait_ready(ready_path)
        except BaseException:
            await server.stop()
            raise
        return server

    async def _wait_ready(self, path: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT_S
        async with httpx.AsyncClient(base_url=self.base_url, timeout=2.0) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(path)).status_code == 200:
                        return
                if loop.time() > deadline:
                    raise TimeoutError(f"{self.name} not ready in {READY_TIMEOUT_S}s")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still there after a while."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        await asyncio.to_thread(self.proc.wait)


def _spawn(cmd: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``cmd`` from the project root, its output going to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            cmd,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
