"""What one connection may cost a ``serve`` process: a deadline to send each request, and a
cap on connections, enforced where uvicorn reads the socket.

uvicorn closes a connection idle *between* requests (``timeout_keep_alive``), but nothing
bounds the time a client takes to send one: a connection that sends half a request head, or
nothing, or trickles a body, holds its socket (and, once its head is in, a task) for as long
as it likes, before any authentication. And the only bound on connections is the open-file
limit. uvicorn's ``limit_concurrency`` answers 503 but says neither when to come back nor
why, and also counts tasks. No maintained package adds these to uvicorn, so this module does
it with one subclass of the HTTP protocol uvicorn[standard] runs (httptools, what ``http=
"auto"`` picks when it is installed), through the parser's own callbacks:

* **The read deadline.** A request (its head, and its body if any) must arrive within
  ``read_timeout_s`` of the connection opening, or of the first byte after the previous
  request: armed then, disarmed by ``on_message_complete``, and on expiry the connection is
  closed. Once a request is in, its response may take as long as it likes: a stream lasts
  hours, and the deadline is not running while it does.
* **The cap.** A request whose head arrives while the process holds more than
  ``max_connections`` connections (every one counts: streams, idle keep-alives, and ones that
  have sent nothing yet) gets ``503`` with ``Retry-After`` and the connection is closed.
  Connections already past their head, a stream among them, are never touched; a silent one
  beyond the cap lasts at most the read deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from service.observe import metrics

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5
"""What a refused client is told to wait: long enough for silent connections to time out."""

WARN_EVERY_S = 10.0


@dataclass
class Limits:
    """The limits of one process, shared by all its connections."""

    read_timeout_s: float
    max_connections: int
    refused: int = 0
    _warned_at: float = field(default=-math.inf, repr=False)

    async def refuse(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """The ASGI app a request over the cap gets instead of genstream's."""
        self.refused += 1
        metrics.CONNECTIONS_REFUSED.inc()
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "at the limit of %d connections (GENSTREAM_MAX_CONNECTIONS): answering 503; "
                "%d request(s) refused so far",
                self.max_connections,
                self.refused,
            )
        detail = (
            f"this server holds its limit of {self.max_connections} connections; "
            f"retry in {RETRY_AFTER_S} s"
        )
        body = json.dumps({"status": 503, "detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(RETRY_AFTER_S).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the read deadline and the cap of ``limits``."""

    limits: ClassVar[Limits]

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._app = self.app
        self._read_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_read_deadline()

    def data_received(self, data: bytes) -> None:
        # A byte that arrives with no deadline running starts the next request: the one
        # before it is complete (on_message_complete stopped its deadline).
        self._start_read_deadline()
        super().data_received(data)

    def on_message_begin(self) -> None:
        # A pipelined request can begin in the same read that completed the one before it.
        self._start_read_deadline()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        over = len(self.connections) > self.limits.max_connections  # this one included
        self.app = self.limits.refuse if over else self._app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_read_deadline()
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._stop_read_deadline()  # the socket goes to the websocket protocol
        super().handle_websocket_upgrade()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_deadline()
        super().connection_lost(exc)

    def _start_read_deadline(self) -> None:
        if self._read_deadline is None:
            self._read_deadline = self.loop.call_later(
                self.limits.read_timeout_s, self._read_deadline_passed
            )

    def _stop_read_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_deadline_passed(self) -> None:
        self._read_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def protocol(limits: Limits) -> type[GuardedProtocol]:
    """The class to give uvicorn as ``http=``; its connections share ``limits``."""

    class Protocol(GuardedProtocol):
        pass

    Protocol.limits = limits
    return Protocol
