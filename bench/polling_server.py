"""The old design, for comparison: events in an in-process dict, an SSE loop polling it.

``POST /publish`` appends the event's frame to a per-channel list in a dict; each stream
remembers how far into its channel's list it has sent and, every 0.5 s, sends whatever was
appended since (with a keepalive comment after 15 s of nothing). No database, no wake-ups:
delivery waits for the next poll, about 250 ms on average. Protocol: see ``bench/asgi.py``.

Run: ``python -m bench.polling_server --port 8200``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

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

POLL_S = 0.5


class PollingApp:
    def __init__(self) -> None:
        self.events: dict[str, list[bytes]] = {}
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
            channels = [params["channel"]] if "channel" in params else list(self.events)
            for channel in channels:
                log = self.events.setdefault(channel, [])
                log.append(event_frame(channel, len(log) + 1, params["t"], params["i"]))
            await respond(send, 200, json.dumps({"stored": len(channels)}).encode())
        elif path == "/healthz":
            await respond(send, 200, b'{"status":"ok"}')
        elif path == "/stats":
            await respond(send, 200, json.dumps({"streams": self.streams}).encode())
        else:
            await respond(send, 404, b'{"detail":"not found"}')

    async def stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        log = self.events.setdefault(query(scope).get("channel", "0"), [])
        sent = len(log)  # live from now on, as the load client expects
        gone = asyncio.Event()
        watcher = asyncio.create_task(until_disconnect(receive, gone.set))
        self.streams += 1
        try:
            await send(SSE_START)
            await send(body_frame(RETRY_FRAME))
            idle = 0.0
            while not gone.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gone.wait(), POLL_S)
                if len(log) > sent:
                    await send(body_frame(b"".join(log[sent:])))
                    sent = len(log)
                    idle = 0.0
                else:
                    idle += POLL_S
                    if idle >= KEEPALIVE_S:
                        await send(body_frame(KEEPALIVE_FRAME))
                        idle = 0.0
        finally:
            self.streams -= 1
            watcher.cancel()
        await send({"type": "http.response.body", "body": b"", "more_body": False})


app = PollingApp()

if __name__ == "__main__":
    run(app, "The old polling design: an in-process dict, streams polling it every 0.5 s.")
