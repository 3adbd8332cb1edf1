"""What the two reference servers share: raw ASGI plumbing and the frame they send.

Both are plain ASGI callables on uvicorn with uvloop and httptools when installed (uvicorn's
``auto``, the same as genstream's ``serve``): no framework, so they show what Python and
uvicorn can do at all. Both speak the same small protocol so one load client drives them and
genstream alike:

* ``GET /stream?channel=K`` - an SSE stream of channel K's events from now on;
* ``POST /publish?channel=K&t=NS&i=N`` - one event on channel K (every stream when K is
  omitted) carrying ``t`` (the publisher's wall clock at the start of the publish, ns) and ``i``;
* ``GET /healthz`` and ``GET /stats`` (``{"streams": n}``).

The event frame has the shape and about the size of a genstream ``llm.delta`` frame, so the
bytes on the wire are comparable.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import uvicorn

from service.server import raise_open_file_limit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Case 3 shortens it (through the environment) so that heartbeats happen while it measures.
KEEPALIVE_S = float(os.environ.get("BENCH_KEEPALIVE_S", "15"))
RETRY_MS = 2000
DELTA_TEXT = (
    "def create_user(email: str, age: int) -> User:\n    return User(email=email, age=age)\n"
)

SSE_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/event-stream"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ],
}
KEEPALIVE_FRAME = b": keepalive\n\n"
RETRY_FRAME = f"retry: {RETRY_MS}\n\n".encode()
_DELTA_JSON = json.dumps(DELTA_TEXT)


def query(scope: Scope) -> dict[str, str]:
    return dict(parse_qsl(scope.get("query_string", b"").decode()))


def event_frame(channel: str, seq: int, t: str, i: str) -> bytes:
    data = (
        f'{{"generation_id":"{channel}","seq":{seq},"type":"llm.delta","status":"running",'
        f'"stage":"models","progress":0.5,"message":"Writing models",'
        f'"timestamp":"2026-01-01T00:00:00.000000Z",'
        f'"data":{{"t":{int(t)},"i":{int(i)},"text":{_DELTA_JSON}}}}}'
    )
    return f"id: {seq}\nevent: llm.delta\ndata: {data}\n\n".encode()


async def respond(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def read_body(receive: Receive) -> None:
    """Drain the request body (publish requests carry none, but be correct)."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def until_disconnect(receive: Receive, on_disconnect: Callable[[], None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    on_disconnect()


def body_frame(frame: bytes) -> Message:
    return {"type": "http.response.body", "body": frame, "more_body": True}


def run(app: Callable[[Scope, Receive, Send], Awaitable[None]], description: str) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raise_open_file_limit()  # as genstream's serve does: every stream is a socket
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=3600,  # the publishers hold their connections between shapes
    )
