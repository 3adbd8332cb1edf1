"""Helpers for tests that run genstream as real processes: one ``python -m service`` process
with its log, its readiness, and how it ends.

Failures here raise plain errors rather than calling pytest: ``scripts/soak.py`` runs the
same machinery outside pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.settings import PROJECT_ROOT

STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServiceProcess:
    """One ``python -m service COMMAND`` process; its stdout and stderr go to ``log_path``.
    ``base_url`` is where a ``serve`` listens (empty for a worker)."""

    name: str
    command: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    base_url: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(30.0)
        )


def spawn_service(
    command: str, name: str, workdir: Path, env: Mapping[str, str], port: int | None = None
) -> ServiceProcess:
    """Start ``python -m service COMMAND`` with ``env`` over this process's environment (a
    ``serve`` gets ``port`` on 127.0.0.1, or a free one: a restart where clients expect it
    passes the old one); not waited for: see ``wait_ready``."""
    workdir.mkdir(parents=True, exist_ok=True)
    if port is None:
        port = free_port() if command == "serve" else 0
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", command],
            cwd=PROJECT_ROOT,
            env={**os.environ, "HOST": "127.0.0.1", **env, "PORT": str(port)},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    base_url = f"http://127.0.0.1:{port}" if port else ""
    return ServiceProcess(name, command, proc, log_path, base_url)


async def readyz(process: ServiceProcess, *, listener: bool = False) -> int:
    """/readyz's status (0: no answer); with ``listener``, 200 only once LISTEN is up too."""
    async with process.client() as client:
        try:
            response = await client.get("/readyz", timeout=5.0)
        except httpx.TransportError:
            return 0
    if listener and response.status_code == 200 and response.json().get("listener") is not True:
        return 0
    return response.status_code


async def wait_ready(process: ServiceProcess, seconds: float = READY_TIMEOUT_S) -> None:
    """Until /readyz is 200 with the LISTEN connection up; fails if the process exits or
    ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    while await readyz(process, listener=True) != 200:
        if not process.alive():
            raise RuntimeError(f"{process.name} exited early:\n{process.log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.name} not ready in {seconds}s:\n{process.log()}")
        await asyncio.sleep(0.05)


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


def kill_all(processes: list[ServiceProcess]) -> None:
    """SIGKILL whatever is left, stopped ones included (SIGCONT first), and reap them all."""
    for process in processes:
        if process.alive():
            with contextlib.suppress(ProcessLookupError):
                process.proc.send_signal(signal.SIGCONT)
                process.proc.kill()
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.proc.wait(STOP_TIMEOUT_S)


@dataclass
class RestartableServe:
    """A ``serve`` process that can be killed and started again on the same port, where its
    clients expect it. ``start`` spawns a new process and waits until it is ready."""

    workdir: Path
    env: Mapping[str, str]
    port: int = field(default_factory=free_port)
    processes: list[ServiceProcess] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def current(self) -> ServiceProcess:
        return self.processes[-1]

    async def start(self) -> ServiceProcess:
        name = f"serve-{len(self.processes)}"
        process = spawn_service("serve", name, self.workdir, self.env, port=self.port)
        self.processes.append(process)
        await wait_ready(process)
        return process

    async def kill(self) -> None:
        """SIGKILL: no stream is ended, no run handed back; the kernel closes the sockets."""
        self.current.proc.kill()
        await asyncio.to_thread(self.current.proc.wait, STOP_TIMEOUT_S)

    async def stop(self) -> None:
        """SIGTERM: streams end, runs are handed back (``terminate``)."""
        await terminate(self.current.proc)
