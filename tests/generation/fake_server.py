"""What the fake model APIs share: a raw-ASGI app served by uvicorn on a free port in the
running event loop, answering each request from a script, and recording every request.

A fake subclasses ``ScriptedServer``, says how a request is recorded (``record``) and answered
(``answer``, which takes the next scripted behaviour with ``next_behaviour``). ``async with
Fake() as fake:`` starts it and sets ``base_url``; leaving the block stops it promptly, even
while a request is held open (``Exchange.pause`` is cut short).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import uvicorn

from tests.conftest import free_socket


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any


RequestT = TypeVar("RequestT", bound=RecordedRequest)
BehaviourT = TypeVar("BehaviourT")


@dataclass
class Exchange:
    """One request in flight: its ASGI send, and whether the client left or we are closing."""

    send: Any
    gone: asyncio.Event
    closing: asyncio.Event
    started: bool = False

    async def pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False when cut short (client gone or server closing)."""
        waiters = [
            asyncio.ensure_future(self.gone.wait()),
            asyncio.ensure_future(self.closing.wait()),
        ]
        try:
            done, _ = await asyncio.wait(waiters, timeout=seconds, return_when="FIRST_COMPLETED")
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return not done

    async def start(self, status: int, content_type: bytes, length: int | None = None) -> None:
        headers = [(b"content-type", content_type)]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        self.started = True

    async def body(self, data: bytes, *, more: bool) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def whole(self, status: int, body: bytes) -> None:
        await self.start(status, b"application/json; charset=UTF-8", len(body))
        await self.body(body, more=False)


@dataclass
class ScriptedServer(Generic[BehaviourT, RequestT]):
    """The server; subclasses implement ``record`` and ``answer``."""

    graceful_shutdown_s: int = 2
    requests: list[RequestT] = field(default_factory=list)
    # Numbers (1-based) of the requests whose client went away before the answer was done.
    abandoned: list[int] = field(default_factory=list)
    base_url: str = ""
    _queue: deque[BehaviourT] = field(default_factory=deque)
    _closing: asyncio.Event = field(default_factory=asyncio.Event)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None
    _sock: socket.socket | None = None

    def script(self, *behaviours: BehaviourT) -> None:
        """Queue what the next requests get, in order."""
        self._queue.extend(behaviours)

    @property
    def pending(self) -> int:
        """Scripted behaviours not yet used by a request."""
        return len(self._queue)

    def next_behaviour(self) -> BehaviourT | None:
        return self._queue.popleft() if self._queue else None

    def record(
        self, method: str, path: str, query: str, headers: dict[str, str], body: Any
    ) -> RequestT:
        raise NotImplementedError

    async def answer(self, exchange: Exchange, request: RequestT, number: int) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._sock = free_socket()
        port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            interface="asgi3",
            log_config=None,
            log_level=None,
            access_log=False,
            timeout_graceful_shutdown=self.graceful_shutdown_s,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task
        if self._sock is not None:
            self._sock.close()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw.extend(message.get("body", b""))
            if not message.get("more_body", False):
                break
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        request = self.record(
            scope["method"],
            scope["path"],
            scope.get("query_string", b"").decode(),
            {k.decode().lower(): v.decode() for k, v in scope["headers"]},
            body,
        )
        self.requests.append(request)

        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        exchange = Exchange(send, gone, self._closing)
        number = len(self.requests)
        try:
            await self.answer(exchange, request, number)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if gone.is_set():
                self.abandoned.append(number)
