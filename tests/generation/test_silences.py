"""``watched``: a stream's items pass through unchanged, and each stretch of silence as long as
``every_s`` becomes a Silence, without the stream's read being interrupted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from service.generation.silences import Silence, watched


async def test_silences_come_while_the_stream_waits_and_its_items_pass_through() -> None:
    gate = asyncio.Event()
    reads_started = 0

    async def stream() -> AsyncIterator[str]:
        nonlocal reads_started
        yield "first"
        reads_started += 1
        await gate.wait()  # the model thinks until the test has seen two silences
        yield "second"

    seen: list[str | Silence] = []
    async with asyncio.timeout(5):
        async for item in watched(stream(), 0.02):
            seen.append(item)
            if sum(isinstance(i, Silence) for i in seen) == 2:
                gate.set()

    assert seen[0] == "first"
    assert seen[-1] == "second"
    silences = [item.waited_s for item in seen if isinstance(item, Silence)]
    assert len(silences) == 2
    assert silences == sorted(silences)
    assert reads_started == 1, "the stream was read again instead of waited for"


async def test_a_stream_that_keeps_talking_has_no_silence() -> None:
    async def stream() -> AsyncIterator[int]:
        for n in range(50):
            yield n

    items = [item async for item in watched(stream(), 5.0)]

    assert items == list(range(50))


async def test_closing_the_watch_mid_silence_cancels_the_pending_read() -> None:
    cancelled = asyncio.Event()

    async def stream() -> AsyncIterator[str]:
        try:
            await asyncio.Event().wait()  # never answers
            yield "never"
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with contextlib.aclosing(watched(stream(), 0.01)) as items:
        first = await anext(items)

    assert isinstance(first, Silence)
    async with asyncio.timeout(5):
        await cancelled.wait()
