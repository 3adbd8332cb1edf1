"""Running a process until it is told to stop: ``serve`` (uvicorn around the app, its
connections guarded by ``connections.py``) and ``worker`` (the runtime alone). The command line
calls these; the parts come from ``runtime.py`` and ``app.py``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import signal
import socket
from types import FrameType

import uvicorn
from litestar import Litestar

from service import connections
from service.app import create_app
from service.observe import metrics
from service.observe.logs import get_logger
from service.runtime import open_runtime
from service.settings import Settings

log = get_logger("service")

GRACEFUL_SHUTDOWN_S = 5


class Server(uvicorn.Server):
    """uvicorn, with the two things a process of endless streams needs from it."""

    def __init__(self, config: uvicorn.Config, app: Litestar) -> None:
        super().__init__(config)
        self._app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # A full collection walks every live object with the loop stopped: 60-80 ms with
        # 1,000 open streams, the slowest 1% of deliveries to 1,000 followers of one
        # generation (measured, bench case 2). What is alive now (modules, the app, the
        # pool) lives as long as the process, so it leaves the collector's sight; and young
        # collections run every 20,000 allocations instead of 700, so that a full one comes
        # every few million allocations (minutes under load), not every second.
        # (docs/decisions/0004-gc-freeze.md)
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 50)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        log.info("serve.stopping", signal=signal.Signals(sig).name)
        # Streams are endless: tell them to end, or uvicorn waits on them forever.
        services = getattr(self._app.state, "services", None)
        if services is not None:
            asyncio.get_running_loop().call_soon_threadsafe(services.hub.end_streams)
        super().handle_exit(sig, frame)


def serve(settings: Settings, database_url: str, *, host: str, port: int) -> None:
    """The HTTP API, the streams and an in-process worker, until SIGTERM or Ctrl-C."""
    raise_open_file_limit()
    if settings.metrics_address is not None:
        metrics.serve_metrics(settings.metrics_address)
    app = create_app(settings, database_url)
    limits = connections.Limits(settings.request_read_timeout_s, settings.max_connections)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=connections.protocol(limits),
        timeout_keep_alive=settings.keepalive_timeout_s,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        log_config=None,  # logging is ours (observe/logs.py), configured by the command line
        access_log=False,  # the request middleware logs each request with its id and route
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    Server(config, app).run()


def run_worker(settings: Settings, database_url: str) -> None:
    """Claim and run generations, no HTTP, until SIGTERM or Ctrl-C; then hand the runs in
    progress back (their leases released, so another worker resumes them at once)."""
    if settings.metrics_address is not None:
        metrics.serve_metrics(settings.metrics_address)

    async def main() -> None:
        async with open_runtime(settings, database_url, serves_streams=False) as runtime:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            log.info("worker.running", worker=runtime.worker.worker_id)
            await stop.wait()
            log.info("worker.stopping", worker=runtime.worker.worker_id)

    asyncio.run(main())


def raise_open_file_limit() -> int:
    """Each SSE client is a socket: the default soft limit of 1024 caps streams near 1000.
    Raises the soft limit to the hard one (an unlimited hard one is not a number the kernel
    accepts for files: 2^20 then); returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard or hard == resource.RLIM_INFINITY:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
