"""``open_runtime``: the parts of a process, wired once. A worker-only runtime runs what is
queued, woken by NOTIFY; a serving one also wakes the streams' hub on every append; both
stop in an order that loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from service.runtime import open_runtime
from service.settings import Settings
from service.store.db import Pool
from service.streams.follow import Keepalive, Streams, follow
from tests.helpers import (
    DONE,
    SMALL_SPEC,
    append,
    create_generation,
    delta,
    new_generation,
    wait_finished,
    wait_until,
)


async def test_a_worker_runtime_runs_a_queued_generation_woken_by_its_notify(
    settings: Settings, database_url: str, pool: Pool
) -> None:
    # A poll far beyond the test's bound: only the jobs channel can wake the worker in time.
    worker_only = settings.model_copy(update={"worker_poll_s": 300.0, "worker_concurrency": 1})
    async with open_runtime(worker_only, database_url, serves_streams=False) as runtime:
        assert runtime.hub is None
        await wait_until(runtime.listener.connected.is_set, "LISTEN is up")
        generation_id = await create_generation(pool, spec=SMALL_SPEC)
        await wait_finished(pool, [generation_id], seconds=30)

    async with pool.acquire() as conn:
        held = await conn.fetchval(
            "SELECT count(*) FROM generations WHERE claimed_by IS NOT NULL"
            " AND status NOT IN ('succeeded', 'failed', 'cancelled')"
        )
    assert held == 0
    assert runtime.pool.is_closing()


async def test_a_serving_runtime_wakes_followers_on_every_append(
    settings: Settings, database_url: str, pool: Pool
) -> None:
    idle = settings.model_copy(update={"worker_concurrency": 0, "wakeup_check_s": 300.0})
    generation_id = await new_generation(pool)
    async with open_runtime(idle, database_url, serves_streams=True) as runtime:
        assert runtime.hub is not None
        await wait_until(runtime.listener.connected.is_set, "LISTEN is up")
        pages = follow(Streams(runtime.hub, keepalive_s=300.0), generation_id, 0)
        assert isinstance(pages, AsyncGenerator)
        seen: list[int] = []
        async with contextlib.aclosing(pages):
            async with asyncio.timeout(10):
                async for page in pages:
                    assert not isinstance(page, Keepalive)
                    seen += [event.seq for event in page]
                    # No wake-up by hand and the periodic check is minutes away: only the
                    # append's NOTIFY, through the runtime's listener, moves the stream on.
                    if seen == [1]:
                        await append(pool, generation_id, delta(1))
                    elif seen == [1, 2]:
                        await append(pool, generation_id, DONE)
    assert seen == [1, 2, 3]
    assert len(runtime.hub) == 0
