"""``Genstream``: the same client for scripts, without asyncio in sight.

It is ``AsyncGenstream`` run on an event loop of its own (``asyncio.Runner``), kept for the
client's life so that its connections are reused: each method runs the async one to its end;
each iterator runs the async one a step at a time. Not for use inside a running event loop
(use ``AsyncGenstream`` there), nor from several threads at once.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import Any, TypeVar

import httpx

from genstream_client.client import DEFAULT_TIMEOUT_S, MAX_LIST_PAGE, AsyncGenstream
from genstream_client.models import (
    Created,
    Event,
    EventPage,
    FileEntry,
    Generation,
    GenerationPage,
)

T = TypeVar("T")
_END: Any = object()


class Genstream:
    """``AsyncGenstream``'s methods, blocking; ``list``, ``events`` and ``follow`` are plain
    iterators.

        with Genstream("http://127.0.0.1:8000", api_key) as genstream:
            created = genstream.create(spec)
            for event in genstream.follow(created.id):
                print(event.seq, event.type, event.message)
    """

    def __init__(
        self, base_url: str, api_key: str, *, timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S
    ) -> None:
        self._runner = asyncio.Runner()
        self._closed = False
        self.aio = AsyncGenstream(base_url, api_key, timeout=timeout)

    def __enter__(self) -> Genstream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._runner.run(self.aio.aclose())
        finally:
            self._runner.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(work)

    def _iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> T:
            return await anext(items, _END)

        try:
            while (item := self._run(step())) is not _END:
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None and not self._closed:  # closed: its loop is gone, and it
                self._run(aclose())

    def create(
        self, spec: Mapping[str, Any], provider: str | None = None, model: str | None = None
    ) -> Created:
        return self._run(self.aio.create(spec, provider, model))

    def get(self, generation_id: str) -> Generation:
        return self._run(self.aio.get(generation_id))

    def list_page(
        self, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> GenerationPage:
        return self._run(self.aio.list_page(status, limit, cursor))

    def list(self, status: str | None = None, limit: int = MAX_LIST_PAGE) -> Iterator[Generation]:
        return self._iterate(self.aio.list(status, limit))

    def cancel(self, generation_id: str) -> str:
        return self._run(self.aio.cancel(generation_id))

    def events_page(self, generation_id: str, after: int = 0, limit: int = 1000) -> EventPage:
        return self._run(self.aio.events_page(generation_id, after, limit))

    def events(self, generation_id: str, after: int = 0) -> Iterator[Event]:
        return self._iterate(self.aio.events(generation_id, after))

    def follow(self, generation_id: str, after: int | None = None) -> Iterator[Event]:
        return self._iterate(self.aio.follow(generation_id, after))

    def stream_token(self, generation_id: str) -> str:
        return self._run(self.aio.stream_token(generation_id))

    def files(self, generation_id: str) -> builtins.list[FileEntry]:
        return self._run(self.aio.files(generation_id))

    def file(self, generation_id: str, path: str) -> str:
        return self._run(self.aio.file(generation_id, path))

    def archive(self, generation_id: str) -> bytes:
        return self._run(self.aio.archive(generation_id))
