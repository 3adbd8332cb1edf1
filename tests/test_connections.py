"""``connections.py`` on a real ``serve`` process, through raw sockets: a client that is slow
or silent before its request is complete is closed at the read deadline, an idle keep-alive
connection at the keep-alive timeout, and beyond the cap a request gets a 503 that says when
to come back, while the streams already open keep flowing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

import pytest

from service.access import keys, tokens
from service.connections import RETRY_AFTER_S
from service.store.db import Pool
from tests.conftest import SERVE_TOKEN_SECRET, SpawnServe
from tests.helpers import STARTED, append, new_generation, wait_until
from tests.processes import ServiceProcess

READ_TIMEOUT_S = 1.0
BOUND_S = 10.0  # how long a test waits for anything before it fails


@dataclass
class Client:
    """One raw TCP connection to a serve process: a client that may misbehave."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    received: bytes = b""

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> tuple[int, dict[str, str]]:
        """The response's status and headers; what follows them stays in ``received``."""
        async with asyncio.timeout(BOUND_S):
            while b"\r\n\r\n" not in self.received:
                chunk = await self.reader.read(65536)
                assert chunk, f"closed before a response head: {self.received!r}"
                self.received += chunk
        head, _, self.received = self.received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        return int(status_line.split()[1]), headers

    async def read_until(self, wanted: bytes) -> None:
        async with asyncio.timeout(BOUND_S):
            while wanted not in self.received:
                chunk = await self.reader.read(65536)
                assert chunk, f"closed before {wanted!r}: {self.received!r}"
                self.received += chunk

    async def seconds_until_closed(self) -> float:
        """From now until the server closes the connection (a reset counts)."""
        start = time.monotonic()
        async with asyncio.timeout(BOUND_S):
            with contextlib.suppress(ConnectionResetError):
                while chunk := await self.reader.read(65536):
                    self.received += chunk
        return time.monotonic() - start

    def close(self) -> None:
        self.writer.close()


Connect = Callable[[ServiceProcess], Awaitable[Client]]


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """``await connect(process)``: a raw connection to it, closed at the end of the test."""
    clients: list[Client] = []

    async def open_client(process: ServiceProcess) -> Client:
        host, port = process.base_url.removeprefix("http://").split(":")
        client = Client(*await asyncio.open_connection(host, int(port)))
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: genstream\r\n\r\n".encode()


async def stream_path(pool: Pool, generation_id: UUID) -> str:
    """A stream URL with a token issued through a live key of the generation's owner."""
    caller = await keys.authenticate(pool, await keys.create_key(pool, "alice"))
    token = tokens.issue(SERVE_TOKEN_SECRET, generation_id, 3600, caller.key_id)
    return f"/api/generations/{generation_id}/stream?token={token}"


async def trickle(client: Client, data: bytes) -> None:
    """A slowloris: one byte every 0.1 s, until the server closes the connection."""
    with contextlib.suppress(ConnectionError):
        for byte in data:
            await client.send(bytes([byte]))
            await asyncio.sleep(0.1)


INCOMPLETE = {
    "nothing": b"",
    "half a head": b"GET /healthz HTTP/1.1\r\nHost: genstream\r\n",
    "half a body": b"POST /api/generations HTTP/1.1\r\nHost: genstream\r\n"
    b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"spec": ',
}


async def test_slow_and_silent_clients_are_closed_on_time_and_a_stream_is_not(
    spawn_serve: SpawnServe, connect: Connect, pool: Pool
) -> None:
    process = await spawn_serve(
        request_read_timeout_s=str(READ_TIMEOUT_S), keepalive_timeout_s="2", keepalive_s="0.2"
    )
    generation_id = await new_generation(pool)
    stream = await connect(process)
    await stream.send(get(await stream_path(pool, generation_id)))
    assert (await stream.head())[0] == 200
    opened = time.monotonic()

    async def incomplete(sends: bytes) -> float:
        client = await connect(process)
        await client.send(sends)
        return await client.seconds_until_closed()

    async def one_byte_at_a_time() -> float:
        client = await connect(process)
        start = time.monotonic()
        slowloris = asyncio.create_task(trickle(client, get("/healthz" + "?x=1" * 100)))
        await client.seconds_until_closed()
        await slowloris
        return time.monotonic() - start

    async def idle_after_a_request() -> float:
        client = await connect(process)
        await client.send(get("/healthz"))
        status, headers = await client.head()
        await client.read_until(b"}")
        assert (status, headers.get("connection")) == (200, None)
        return await client.seconds_until_closed()

    names = [*INCOMPLETE, "one byte at a time", "idle after a request"]
    seconds = dict(
        zip(
            names,
            await asyncio.gather(
                *(incomplete(sends) for sends in INCOMPLETE.values()),
                one_byte_at_a_time(),
                idle_after_a_request(),
            ),
            strict=True,
        )
    )

    for name in names[:-1]:  # closed by the read deadline...
        assert READ_TIMEOUT_S - 0.1 < seconds[name] < READ_TIMEOUT_S + 2, (name, seconds)
    assert 1.9 < seconds["idle after a request"] < 4, seconds  # ...and by the keep-alive one
    while time.monotonic() - opened < 3 * READ_TIMEOUT_S:  # the stream lives on
        stream.received = b""
        await stream.read_until(b": keepalive\n\n")
    await append(pool, generation_id, STARTED)
    await stream.read_until(b"id: 2\n")


async def test_beyond_the_cap_a_request_gets_503_with_retry_after_and_streams_keep_flowing(
    spawn_serve: SpawnServe, connect: Connect, pool: Pool
) -> None:
    cap = 3
    process = await spawn_serve(max_connections=str(cap), request_read_timeout_s="2")
    generation_id = await new_generation(pool)

    async def open_stream() -> Client | None:
        # The readiness probe's connection may not be gone from the server's count yet.
        client = await connect(process)
        await client.send(get(await stream_path(pool, generation_id)))
        if (await client.head())[0] == 200:
            return client
        client.close()
        return None

    streams = [await wait_until(open_stream, "a stream under the cap") for _ in range(cap)]

    refused = await connect(process)
    await refused.send(get("/healthz"))
    status, headers = await refused.head()
    await refused.seconds_until_closed()
    assert status == 503
    assert headers["retry-after"] == str(RETRY_AFTER_S)
    assert headers["connection"] == "close"
    assert json.loads(refused.received) == {
        "status": 503,
        "detail": f"this server holds its limit of {cap} connections; retry in 5 s",
    }
    assert "at the limit of 3 connections (GENSTREAM_MAX_CONNECTIONS)" in process.log()

    await append(pool, generation_id, STARTED)
    for stream in streams:
        await stream.read_until(b"id: 2\n")

    streams[0].close()

    async def healthz() -> bool:
        client = await connect(process)
        await client.send(get("/healthz"))
        status, _ = await client.head()
        client.close()
        return status == 200

    await wait_until(healthz, "a request once a stream has gone")
