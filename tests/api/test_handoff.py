"""``api/handoff.py``: a stream's body written after Litestar's handling returned, over real
HTTP (uvicorn), with and without ``StreamingApp`` in front."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, get
from litestar.exceptions import LitestarException

from service.api.handoff import HandedOffStream, StreamingApp
from tests.conftest import serve
from tests.helpers import wait_until


class Probe:
    """What the handler and its body saw: whether it was called, the body's end."""

    def __init__(self) -> None:
        self.handled = False
        self.closed = asyncio.Event()
        self.release = asyncio.Event()


def make_app(app_class: type[Litestar], probe: Probe, chunks: int | None) -> Litestar:
    """A stream of ``chunks`` chunks (None: a first one, then one more when ``release`` is
    set, then it waits for ever)."""

    async def body() -> AsyncIterator[bytes]:
        try:
            if chunks is not None:
                for k in range(chunks):
                    yield f"data: {k}\n\n".encode()
                return
            yield b"data: first\n\n"
            await probe.release.wait()
            yield b"data: second\n\n"
            await asyncio.Event().wait()
        finally:
            probe.closed.set()

    @get("/stream", media_type="text/event-stream", sync_to_thread=False)
    def stream(request: Request[Any, Any, Any]) -> HandedOffStream:
        probe.handled = True
        return HandedOffStream(body(), media_type="text/event-stream")

    return app_class(route_handlers=[stream])


@pytest.mark.parametrize("app_class", [StreamingApp, Litestar])
async def test_every_chunk_arrives_with_or_without_the_app_in_front(
    app_class: type[Litestar],
) -> None:
    probe = Probe()
    async with serve(make_app(app_class, probe, 50)) as running, httpx.AsyncClient() as client:
        response = await client.get(f"{running.base_url}/stream")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text == "".join(f"data: {k}\n\n" for k in range(50))
    assert probe.closed.is_set()


async def test_the_request_is_garbage_while_its_body_is_written() -> None:
    probe = Probe()
    async with (
        serve(make_app(StreamingApp, probe, None)) as running,
        httpx.AsyncClient() as client,
        client.stream("GET", f"{running.base_url}/stream") as response,
    ):
        lines = response.aiter_lines()
        assert await anext(lines) == "data: first"
        assert probe.handled
        gc.collect()
        # Request has slots and no weak references: counted among the live objects instead.
        assert not [o for o in gc.get_objects() if isinstance(o, Request)]
        probe.release.set()
        assert await anext(lines) == ""
        assert await anext(lines) == "data: second"


@pytest.mark.parametrize("app_class", [StreamingApp, Litestar])
async def test_a_client_that_leaves_closes_the_body_where_it_waits(
    app_class: type[Litestar],
) -> None:
    probe = Probe()
    async with serve(make_app(app_class, probe, None)) as running:
        async with (
            httpx.AsyncClient() as client,
            client.stream("GET", f"{running.base_url}/stream") as response,
        ):
            assert await anext(response.aiter_lines()) == "data: first"
            assert not probe.closed.is_set()
        await wait_until(probe.closed.is_set, "the body closed after the client left")


class Unstartable:
    """A body that records whether it was closed, started or not."""

    def __init__(self) -> None:
        self.closed = False

    def __aiter__(self) -> Unstartable:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize("failing", ["the response's start", "a hook after the response"])
async def test_a_body_never_written_is_closed_though_never_started(failing: str) -> None:
    """A stream's body holds its owner's slot until it is closed: a response whose headers
    could not be sent (the client gone at once), or whose handling failed after them, must
    still close it."""
    body = Unstartable()

    @get("/stream", media_type="text/event-stream", sync_to_thread=False)
    def stream() -> HandedOffStream:
        return HandedOffStream(body, media_type="text/event-stream")

    def after_response(request: Request[Any, Any, Any]) -> None:
        raise OSError("the client is gone")

    app = StreamingApp(
        route_handlers=[stream],
        after_response=after_response if failing == "a hook after the response" else None,
    )
    scope: Any = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/stream",
        "raw_path": b"/stream",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start" and failing == "the response's start":
            raise OSError("the client is gone")

    with pytest.raises((LitestarException, OSError)) as raised:
        await app(scope, receive, send)
    assert "the client is gone" in repr(raised.value) + repr(raised.value.__cause__)
    assert body.closed
