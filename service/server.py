"""Running a process until it is told to stop: ``serve`` (uvicorn around the app, its
connections guarded by ``connections.py``) and ``worker`` (the runtime alone), both logging
with secrets redacted. The command line calls these; the parts come from ``runtime.py`` and
``app.py``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import resource
import signal
import socket
from collections.abc import Mapping
from types import FrameType
from typing import Any

import uvicorn
from litestar import Litestar

from service import connections
from service.app import create_app
from service.runtime import open_runtime
from service.settings import Settings

log = logging.getLogger("service")

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
        # Streams are endless: tell them to end, or uvicorn waits on them forever.
        services = getattr(self._app.state, "services", None)
        if services is not None:
            asyncio.get_running_loop().call_soon_threadsafe(services.hub.end_streams)
        super().handle_exit(sig, frame)


def serve(settings: Settings, database_url: str, *, host: str, port: int) -> None:
    """The HTTP API, the streams and an in-process worker, until SIGTERM or Ctrl-C."""
    raise_open_file_limit()
    redact_secrets_in_logs()
    app = create_app(settings, database_url)
    limits = connections.Limits(settings.request_read_timeout_s, settings.max_connections)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=connections.protocol(limits),
        timeout_keep_alive=settings.keepalive_timeout_s,
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        lifespan="on",
    )
    Server(config, app).run()


def run_worker(settings: Settings, database_url: str) -> None:
    """Claim and run generations, no HTTP, until SIGTERM or Ctrl-C; then hand the runs in
    progress back (their leases released, so another worker resumes them at once)."""
    redact_secrets_in_logs()

    async def main() -> None:
        async with open_runtime(settings, database_url, serves_streams=False) as runtime:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            log.info("worker %s running", runtime.worker.worker_id)
            await stop.wait()

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


# What must never reach a log line: a credential in a query string (uvicorn's access log
# writes every URL, and a stream token is good for an hour), an API key or a stream token
# anywhere (a key put in a URL by mistake is refused, and would still be logged), a bearer
# credential, a password in a database URL.
_SECRETS = (
    (
        re.compile(
            r"(?<![\w-])((?:token|stream_token|access_token|api_key|apikey|key|password|secret)=)"
            r"[^&\s\"']+",
            re.IGNORECASE,
        ),
        r"\1***",
    ),
    (re.compile(r"\bgsk_[\w-]+"), "gsk_***"),
    (re.compile(r"\b[0-9]+\.[\w-]{43}(?![\w-])"), "***"),  # <expiry>.<signature>
    (re.compile(r"\b(Bearer\s+)\S+", re.IGNORECASE), r"\1***"),
    (re.compile(r"(://[^/:@\s]*:)[^@/\s]+@"), r"\1***@"),
)


def redact(text: str) -> str:
    """``text`` with every secret it carries replaced by ``***``."""
    for secret, replacement in _SECRETS:
        text = secret.sub(replacement, text)
    return text


def _redacted(value: Any) -> Any:
    if isinstance(value, (int, float)) or value is None:
        return value  # never a secret, and a %d placeholder needs the number
    try:
        text = str(value)
    except Exception:
        return value  # logging reports it when it formats the line; never raise here
    clean = redact(text)
    return value if clean == text else clean


def redact_secrets_in_logs() -> None:
    """Every log record of this process, whoever logs it and wherever it goes, is made with
    its secrets redacted: message, arguments and exception text. uvicorn's access log formats
    from the arguments, so each is redacted in place rather than the message rendered."""
    make_record = logging.getLogRecordFactory()
    if getattr(make_record, "redacts", False):
        return

    def redacted_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.msg = _redacted(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {name: _redacted(value) for name, value in record.args.items()}
        elif record.args:
            record.args = tuple(_redacted(value) for value in record.args)
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_FORMATTER.formatException(record.exc_info))
        return record

    redacted_record.redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(redacted_record)


_FORMATTER = logging.Formatter()
