"""A stand-in for genstream's stream, events and stream-token endpoints, over real HTTP, for
what a real server never does on purpose: skip a seq, repeat one, cut a stream in the middle
of a frame, answer 503 or 401 exactly when a test needs it.

``async with FakeGenstream(events) as fake:`` serves a raw-ASGI app with uvicorn on a free port
in the running event loop. Each stream request takes the next scripted ``Answer``
(``fake.script(...)``); with none left it gets what a correct server sends: every stored event
after its Last-Event-ID, then the end (or 204 when there is nothing after it).
``fake.requests`` records every request.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

import uvicorn

from tests.conftest import free_socket

GENERATION_ID = "3f0e6d0a-8a39-4b7e-9d7e-0c2b8f1a9e55"
KEY = "gsk_fake_key"
STREAM = f"/api/generations/{GENERATION_ID}/stream"
TERMINAL = ("generation.succeeded", "generation.failed", "generation.cancelled")


def event_json(seq: int, type_: str = "llm.delta", **data: Any) -> str:
    """An event as the server writes it: compact JSON text, one line."""
    status = {"generation.succeeded": "succeeded"}.get(type_, "running")
    return json.dumps(
        {
            "generation_id": GENERATION_ID,
            "seq": seq,
            "type": type_,
            "status": status,
            "stage": "models",
            "progress": 0.5,
            "message": f"event {seq}",
            "timestamp": "2026-11-24T06:40:12.123456Z",
            "data": data,
        },
        separators=(",", ":"),
    )


def run_of(count: int) -> list[str]:
    """Events 1..count: queued, deltas, succeeded."""
    return [
        event_json(
            seq,
            "generation.queued"
            if seq == 1
            else "generation.succeeded"
            if seq == count
            else "llm.delta",
        )
        for seq in range(1, count + 1)
    ]


def frame(text: str) -> bytes:
    seq, type_ = json.loads(text)["seq"], json.loads(text)["type"]
    return f"id: {seq}\nevent: {type_}\ndata: {text}\n\n".encode()


@dataclass(frozen=True)
class Answer:
    """One stream request's answer: a status (with a problem body when it is an error) and
    headers, or 200 with ``chunks`` as the body. ``cut``: the connection is dropped after them
    (a chunked body cut short), instead of the stream ending cleanly."""

    status: int = 200
    chunks: tuple[bytes, ...] = ()
    detail: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    cut: bool = False


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeGenstream:
    events: list[str]
    requests: list[Request] = field(default_factory=list)
    tokens_issued: int = 0
    base_url: str = ""
    _answers: deque[Answer] = field(default_factory=deque)
    _server: uvicorn.Server | None = None
    _task: asyncio.Task[None] | None = None

    def script(self, *answers: Answer) -> None:
        self._answers.extend(answers)

    def streams(self) -> list[Request]:
        return [r for r in self.requests if r.path == STREAM]

    async def __aenter__(self) -> FakeGenstream:
        sock = free_socket()
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            interface="asgi3",
            log_config=None,
            log_level=None,
            access_log=False,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            await self._task

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = Request(scope["method"], scope["path"], query, headers)
        self.requests.append(request)
        if request.path == STREAM:
            await self._stream(request, send)
        elif headers.get("authorization") != f"Bearer {KEY}":
            await _whole(send, 401, {"status": 401, "detail": "unknown API key"})
        elif request.path.endswith("/stream-token") and request.method == "POST":
            self.tokens_issued += 1
            token = {"stream_url": STREAM, "stream_token": f"token-{self.tokens_issued}"}
            await _whole(send, 201, {**token, "expires_in": 3600})
        elif request.path.endswith("/events"):
            after, limit = int(query.get("after", 0)), int(query.get("limit", 100))
            page = [e for e in self.events if json.loads(e)["seq"] > after]
            body = (
                '{"events":['
                + ",".join(page[:limit])
                + f'],"next_after":{json.loads(page[:limit][-1])["seq"] if page else after},'
                + f'"has_more":{"true" if len(page) > limit else "false"}}}'
            )
            await _start(send, 200, "application/json")
            await send({"type": "http.response.body", "body": body.encode()})
        else:
            await _whole(send, 404, {"status": 404, "detail": f"no {request.path}"})

    async def _stream(self, request: Request, send: Any) -> None:
        answer = self._answers.popleft() if self._answers else self._honest(request)
        if answer.status != 200:
            body = {"status": answer.status, "detail": answer.detail or f"{answer.status}"}
            await _whole(send, answer.status, body, answer.headers)
            return
        await _start(send, 200, "text/event-stream", answer.headers)
        for chunk in answer.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if not answer.cut:
            await send({"type": "http.response.body", "body": b""})
        # cut: returning with the body unfinished makes uvicorn drop the connection

    def _honest(self, request: Request) -> Answer:
        after = int(request.headers.get("last-event-id", request.query.get("after", "0")))
        rest = [e for e in self.events if json.loads(e)["seq"] > after]
        if not rest:
            return Answer(204)
        return Answer(chunks=(b"retry: 10\n\n", *map(frame, rest)))


async def _start(
    send: Any, status: int, content_type: str, headers: tuple[tuple[str, str], ...] = ()
) -> None:
    raw = [(b"content-type", content_type.encode())]
    raw += [(k.encode(), v.encode()) for k, v in headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})


async def _whole(
    send: Any, status: int, body: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
) -> None:
    if status == 204:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await _start(send, status, "application/json", headers)
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
