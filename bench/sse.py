"""A load client for many Server-Sent Event streams from one process.

Why raw asyncio streams rather than httpx for the load shapes: the client shares two cores
with the server under test (and PostgreSQL), so whatever it spends per stream and per event
is taken from the thing measured. httpx gives every connection a pool slot, an h11 state
machine and a chain of async iterators per chunk; at 1,000 streams that is tens of MB and a
visible share of a core. Here a stream is one socket, one task, a de-chunker and a frame
splitter working on whole reads (``bytes.split`` on blank lines, in C), so the client stays a
small fraction of what it measures. It still parses what it receives as a browser would:
HTTP/1.1 status and headers, chunked transfer coding, SSE fields (``id``, ``event``,
``data``, ``retry``, comments), LF or CRLF line ends. The catch-up case, which measures one
stream's raw speed, uses httpx as a real HTTP client and the same frame parser.

The parser is minimal on purpose: lines ending in a lone CR (legal SSE, sent by nothing here)
are not split.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass


class HTTPStatusError(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


@dataclass(slots=True)
class Frame:
    """One SSE frame; ``data`` stays bytes (``json.loads`` takes bytes)."""

    id: bytes | None = None
    event: bytes | None = None
    data: bytes | None = None
    retry: int | None = None
    comment: bool = False


def parse_block(block: bytes) -> Frame:
    frame = Frame()
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if line.startswith(b":"):
            frame.comment = True
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"id":
            frame.id = value
        elif name == b"event":
            frame.event = value
        elif name == b"retry" and value.isdigit():
            frame.retry = int(value)
    if data:
        frame.data = b"\n".join(data)
    return frame


class FrameParser:
    """Feed it bytes as they arrive; it returns the frames completed by them."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        *blocks, self._buffer = buffer.split(b"\n\n")
        return [parse_block(block) for block in blocks if block]


class ChunkedDecoder:
    """HTTP/1.1 chunked transfer coding, decoded incrementally."""

    __slots__ = ("_buffer", "_need_crlf", "_remaining", "done")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._remaining = 0
        self._need_crlf = False
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        buffer = self._buffer
        while not self.done:
            if self._remaining:
                take = min(self._remaining, len(buffer))
                out += buffer[:take]
                del buffer[:take]
                self._remaining -= take
                if self._remaining:
                    break
                self._need_crlf = True
            if self._need_crlf:
                if len(buffer) < 2:
                    break
                del buffer[:2]
                self._need_crlf = False
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            size = int(bytes(buffer[:end]).split(b";")[0], 16)
            del buffer[: end + 2]
            if size == 0:
                self.done = True
            self._remaining = size
        return bytes(out)


def _request(method: str, host: str, port: int, path: str, headers: Sequence[str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", *headers]
    if method == "POST":
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _parse_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name:
            headers[name.strip().lower()] = value.strip()
    return status, headers


class RawSSEStream:
    """One ``GET`` of an event stream on its own connection."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        chunked: bool,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._chunked = chunked

    @classmethod
    async def open(
        cls, host: str, port: int, path: str, headers: Sequence[str] = ()
    ) -> RawSSEStream:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        try:
            writer.write(
                _request(
                    "GET",
                    host,
                    port,
                    path,
                    ["Accept: text/event-stream", "Cache-Control: no-cache", *headers],
                )
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status, response_headers = _parse_head(head[:-4])
            chunked = response_headers.get(b"transfer-encoding", b"").lower() == b"chunked"
            if status != 200:
                length = int(response_headers.get(b"content-length", b"0"))
                body = await reader.readexactly(length) if length else b""
                raise HTTPStatusError(status, body)
        except BaseException:
            writer.close()
            raise
        return cls(reader, writer, chunked)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The response body as it arrives, de-chunked; ends when the server ends it."""
        decoder = ChunkedDecoder() if self._chunked else None
        while True:
            data = await self._reader.read(1 << 16)
            if not data:
                return
            if decoder is None:
                yield data
                continue
            body = decoder.feed(data)
            if body:
                yield body
            if decoder.done:
                return

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()


class HttpConnection:
    """A keep-alive HTTP/1.1 connection for small requests (the publishers)."""

    def __init__(
        self, host: str, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.host = host
        self.port = port
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(host, port, reader, writer)

    async def request(self, method: str, path: str) -> tuple[int, bytes]:
        """One request; a connection the server closed while idle is reopened once."""
        if self._writer.is_closing() or self._reader.at_eof():
            await self._reopen()
        try:
            return await self._exchange(method, path)
        except (ConnectionError, asyncio.IncompleteReadError, RuntimeError):
            # The server dropped the idle connection as we wrote (keep-alive timeout).
            await self._reopen()
            return await self._exchange(method, path)

    async def _exchange(self, method: str, path: str) -> tuple[int, bytes]:
        self._writer.write(_request(method, self.host, self.port, path, []))
        head = await self._reader.readuntil(b"\r\n\r\n")
        status, headers = _parse_head(head[:-4])
        length = int(headers.get(b"content-length", b"0"))
        body = await self._reader.readexactly(length) if length else b""
        return status, body

    async def _reopen(self) -> None:
        self._writer.close()
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def aclose(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self._writer.wait_closed()
