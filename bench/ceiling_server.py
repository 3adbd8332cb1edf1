"""The SSE ceiling: a minimal in-memory fan-out on one uvicorn process, no database.

An ``asyncio.Queue`` per stream; ``POST /publish`` encodes the event ONCE and puts the same
bytes on every subscribed stream's queue; each stream task sends what its queue holds, with a
keepalive comment after 15 s of silence (a per-stream timeout, so keepalives are spread out,
as the contract asks of genstream). A watcher task per stream notices the client leaving.
That is about the least a Python SSE server can do per stream and per event, so genstream's
stream path is reported as a ratio of it. Protocol: see ``bench/asgi.py``.

Run: ``python -m bench.ceiling_server --port 8100``.
"""

from __future__ import annotations

import asyncio
import json
from functools import partial

from bench.asgi import (
    KEEPALIVE_FRAME,
    KEEPALIVE_S,
    RETRY_FRAME,
    SSE_START,
    Receive,
    Scope,
    Send,
    body_frame,
    event_frame,
    query,
    read_body,
    respond,
    run,
    until_disconnect,
)

Queue = asyncio.Queue[bytes | None]


class CeilingApp:
    def __init__(self) -> None:
        self.channels: dict[str, set[Queue]] = {}
        self.seq: dict[str, int] = {}
        self.streams = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/stream" and method == "GET":
            await self.stream(scope, receive, send)
        elif path == "/publish" and method == "POST":
            await read_body(receive)
            params = query(scope)
            delivered = self.publish(params.get("channel"), params["t"], params["i"])
            await respond(send, 200, json.dumps({"delivered": delivered}).encode())
        elif path == "/healthz":
            await respond(send, 200, b'{"status":"ok"}')
        elif path == "/stats":
            await respond(send, 200, json.dumps({"streams": self.streams}).encode())
        else:
            await respond(send, 404, b'{"detail":"not found"}')

    def publish(self, channel: str | None, t: str, i: str) -> int:
        """One event to every stream of ``channel`` (to every stream when None)."""
        delivered = 0
        for name in [channel] if channel is not None else list(self.channels):
            subscribers = self.channels.get(name)
            if not subscribers:
                continue
            seq = self.seq[name] = self.seq.get(name, 0) + 1
            frame = event_frame(name or "all", seq, t, i)
            for queue in subscribers:
                queue.put_nowait(frame)
            delivered += len(subscribers)
        return delivered

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        channel = query(scope).get("channel", "0")
        queue: Queue = asyncio.Queue()
        subscribers = self.channels.setdefault(channel, set())
        subscribers.add(queue)
        self.streams += 1
        watcher = asyncio.create_task(until_disconnect(receive, partial(queue.put_nowait, None)))
        try:
            await send(SSE_START)
            await send(body_frame(RETRY_FRAME))
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        frame = await queue.get()
                except TimeoutError:
                    frame = KEEPALIVE_FRAME
                if frame is None:
                    break
                await send(body_frame(frame))
        finally:
            self.streams -= 1
            subscribers.discard(queue)
            if not subscribers:
                self.channels.pop(channel, None)
            watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


app = CeilingApp()

if __name__ == "__main__":
    run(app, "A minimal in-memory SSE fan-out: the ceiling genstream is measured against.")
