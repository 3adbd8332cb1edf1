"""A model's silence made visible: ``watched(stream, every_s)`` passes a stream's items through
and, each time ``every_s`` passes with none, yields a ``Silence`` saying how long it has been.

The generator turns each Silence into an ``llm.waiting`` event: a reader then tells a model that
is thinking (events keep coming) from a worker that is gone (nothing comes until the lease runs
out). The stream is never interrupted: its next item is awaited in a task of its own, and the
wait for it is what times out, not the read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Silence:
    waited_s: float  # since the stream's last item (or since it was asked)


async def watched(
    stream: AsyncIterator[T], every_s: float, clock: Callable[[], float] = time.monotonic
) -> AsyncGenerator[T | Silence, None]:
    """``stream``'s items, with a Silence after each ``every_s`` without one."""
    since = clock()
    while True:
        pending = asyncio.ensure_future(anext(stream))
        try:
            while True:
                done, _ = await asyncio.wait({pending}, timeout=every_s)
                if done:
                    break
                yield Silence(round(clock() - since, 1))
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
        finally:
            if not pending.done():
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
        since = clock()
        yield item
