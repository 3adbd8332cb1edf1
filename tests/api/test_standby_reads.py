"""Reads off a hot standby through HTTP (``GENSTREAM_REPLICA_URL``): a real uvicorn server, a
real streaming standby (tests/replica.py) and real SSE parsing. The worker is off; the test
appends events itself, as a worker elsewhere would."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from service.store.db import Pool
from tests.api.test_owner_stream import by_run, read_until
from tests.api.test_stream import Received, read_stream, wait_for_frames
from tests.conftest import AppFactory, free_socket
from tests.helpers import (
    DONE,
    STARTED,
    append,
    create_via_api,
    delta,
    events_via_api,
    wait_until,
)
from tests.replica import Standby, answered, more

WAIT_S = 0.05


def seqs(events: list[dict[str, Any]]) -> list[int]:
    return [event["seq"] for event in events]


async def test_with_replay_paused_a_stream_and_the_events_endpoint_get_every_event_once(
    app_factory: AppFactory, api_key: str, pool: Pool, replica_url: str, standby: Standby
) -> None:
    settings = {"replica_url": replica_url, "replica_wait_s": WAIT_S, "stream_page_size": 7}
    async with (
        app_factory(worker_concurrency=0, **settings) as running,
        running.client(api_key) as client,
    ):
        generation_id = (await create_via_api(client))["id"]
        await standby.caught_up()
        before = answered()
        async with standby.paused():
            last = await append(pool, generation_id, STARTED, *(delta(n) for n in range(20)))
            # Opened now, the stream's catch-up must reach the head the primary gave it.
            received = Received(0, httpx.Headers())
            reader = asyncio.create_task(
                read_stream(client, generation_id, received=received, timeout=30)
            )
            await wait_for_frames(received, last, 10)
            paused_page = await events_via_api(client, generation_id)
            # Live while replay is paused: the live edge reads the primary its NOTIFY came from.
            last = await append(pool, generation_id, *(delta(n) for n in range(20, 30)))
            await wait_for_frames(received, last, 10)
            while_paused = more(before)
        # Resumed: the rest live, and the next reads from the standby again.
        last = await append(pool, generation_id, delta(30), DONE)
        await asyncio.wait_for(reader, 10)
        await standby.caught_up()
        resumed = answered()
        resumed_page = await events_via_api(client, generation_id)
        resumed_stream = await read_stream(client, generation_id, timeout=10)
        after_resume = more(resumed)

    assert received.seqs == list(range(1, last + 1)), "each event once, in order"
    assert received.closed_by_server
    assert seqs(paused_page) == list(range(1, 23))
    assert while_paused == {"primary": 5}  # the stream's 4 catch-up pages, the events page
    assert seqs(resumed_page) == list(range(1, last + 1))
    assert resumed_stream.seqs == list(range(1, last + 1))
    assert after_resume == {"replica": 1 + -(-last // 7)}  # the events page, the stream's pages


async def test_reads_go_to_a_caught_up_standby_and_writes_and_the_live_edge_do_not(
    app_factory: AppFactory, api_key: str, pool: Pool, replica_url: str, standby: Standby
) -> None:
    settings = {"replica_url": replica_url, "replica_wait_s": WAIT_S, "stream_page_size": 5}
    async with (
        app_factory(worker_concurrency=0, **settings) as running,
        running.client(api_key) as client,
    ):
        generation_id = (await create_via_api(client))["id"]
        last = await append(pool, generation_id, STARTED, *(delta(n) for n in range(10)))
        await standby.caught_up()
        before = answered()
        resumed = await read_stream(
            client, generation_id, headers={"Last-Event-ID": "3"}, stop_after=last - 3
        )
        page = await events_via_api(client, generation_id)
        stats = await client.get("/api/stats")
        caught_up = more(before)
        # At the live edge: a stream at the head reads the primary, which NOTIFY speaks for.
        hub = running.app.state.services.hub
        await wait_until(lambda: len(hub) == 0, "the stream that hung up to be gone")
        received = Received(0, httpx.Headers())
        reader = asyncio.create_task(
            read_stream(client, generation_id, received=received, params={"after": last})
        )
        await wait_until(lambda: len(hub) == 1, "the live stream to subscribe")
        live = answered()
        last = await append(pool, generation_id, DONE)
        await asyncio.wait_for(reader, 10)

    assert resumed.seqs == list(range(4, last))
    assert seqs(page) == list(range(1, last))
    assert stats.status_code == 200, stats.text
    assert stats.json()["generations"]["in_progress"] == 1
    # Two catch-up pages of 5 (seq 4..12), the events page, the stats: all on the standby.
    assert caught_up == {"replica": 4}
    assert received.seqs == [last]
    assert more(live) == {}, "the live edge is read on the primary, not through the standby"


async def test_with_replay_paused_stats_count_a_run_the_standby_has_not_seen(
    app_factory: AppFactory, api_key: str, replica_url: str, standby: Standby
) -> None:
    async with (
        app_factory(worker_concurrency=0, replica_url=replica_url, replica_wait_s=WAIT_S) as app,
        app.client(api_key) as client,
    ):
        await standby.caught_up()
        async with standby.paused():
            await create_via_api(client)
            before = answered()
            stats = (await client.get("/api/stats")).json()
            fell_back = more(before)

    assert stats["generations"]["total"] == 1
    assert fell_back == {"primary": 1}


async def test_a_standby_that_is_away_keeps_nothing_from_working(
    app_factory: AppFactory, api_key: str, pool: Pool, database_url: str
) -> None:
    with free_socket() as unused:
        port = unused.getsockname()[1]
    nowhere = database_url.replace(database_url.split("@")[1].split("/")[0], f"127.0.0.1:{port}")
    async with (
        app_factory(worker_concurrency=0, replica_url=nowhere) as running,
        running.client(api_key) as client,
    ):
        generation_id = (await create_via_api(client))["id"]
        last = await append(pool, generation_id, STARTED, delta(1), DONE)
        before = answered()
        received = await read_stream(client, generation_id, timeout=10)
        page = await events_via_api(client, generation_id)
        stats = await client.get("/api/stats")

    assert received.seqs == list(range(1, last + 1))
    assert seqs(page) == list(range(1, last + 1))
    assert stats.status_code == 200
    assert more(before) == {"primary": 3}


async def test_with_replay_paused_the_owner_stream_gets_every_event_once_from_the_primary(
    app_factory: AppFactory, api_key: str, pool: Pool, replica_url: str, standby: Standby
) -> None:
    async with (
        app_factory(worker_concurrency=0, replica_url=replica_url, replica_wait_s=WAIT_S) as app,
        app.client(api_key) as client,
    ):
        await standby.caught_up()
        before = answered()
        async with standby.paused():
            ids = [(await create_via_api(client))["id"] for _ in range(2)]
            frames: list[Any] = []
            reader = asyncio.create_task(read_until(client, set(ids), frames=frames))
            for n in range(5):
                for generation_id in ids:
                    await append(pool, generation_id, STARTED if n == 0 else delta(n))
            for generation_id in ids:
                await append(pool, generation_id, DONE)
            await asyncio.wait_for(reader, 20)
            owner_feed_reads = more(before)
        logs = {run: seqs(await events_via_api(client, run)) for run in ids}

    assert by_run(frames) == logs == {run: list(range(1, 8)) for run in ids}
    assert owner_feed_reads == {}, "the owner stream reads the primary only"
