"""Several `serve` processes on one database: any process streams any generation, by push.

Each app instance here is a real ``python -m service serve`` subprocess with its own pool and
its own LISTEN connection; the only thing they share is the PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from httpx_sse import EventSource, ServerSentEvent, aconnect_sse

from service.events import EventType, NewEvent
from service.store import event_log
from service.store.db import Pool
from tests.conftest import KeyFactory
from tests.helpers import insert_running_generation
from tests.processes import (
    STOP_TIMEOUT_S,
    ServiceProcess,
    spawn_service,
    terminate,
    wait_exit,
    wait_ready,
)

# Big enough that the offline run (0.02 s per chunk) lasts well over a second, so a stream
# opened right after creating the generation is certainly open before the run ends.
BIG_SPEC: dict[str, Any] = {
    "project": "fleet",
    "entities": [
        {"name": f"Thing{n}", "fields": {f"field_{i}": "str" for i in range(12)}} for n in range(10)
    ],
}


Spawn = Callable[..., Awaitable[ServiceProcess]]


async def event_frames(source: EventSource) -> AsyncIterator[ServerSentEvent]:
    """The stream's event frames. Skipped: the bare ``retry:`` frame it starts with, and the
    empty events httpx-sse dispatches on keepalive comments once an id was seen (a browser
    fires no event without data)."""
    async for sse in source.aiter_sse():
        if sse.data:
            yield sse


@pytest.fixture
async def spawn(database_url: str, tmp_path: Path) -> AsyncIterator[Spawn]:
    """``await spawn("a", worker_concurrency=2)``: a ready `serve` process on the test database,
    terminated (SIGTERM, then SIGKILL after 10 s) at the end of the test."""
    started: list[ServiceProcess] = []

    async def start(name: str, *, worker_concurrency: int) -> ServiceProcess:
        process = spawn_service(
            "serve",
            name,
            tmp_path,
            {
                "DATABASE_URL": database_url,
                "GENSTREAM_STREAM_TOKEN_SECRET": "processes-test-secret",
                "GENSTREAM_OFFLINE_DELAY_S": "0.004",
                "GENSTREAM_WORKER_CONCURRENCY": str(worker_concurrency),
                "GENSTREAM_DATA_DIR": str(tmp_path / name),
            },
        )
        started.append(process)
        await wait_ready(process)
        return process

    yield start
    await asyncio.gather(*(terminate(process.proc) for process in started))


async def test_a_stream_on_one_process_relays_every_event_of_a_run_on_another(
    spawn: Spawn, make_key: KeyFactory, pool: Pool
) -> None:
    a, b = await asyncio.gather(spawn("a", worker_concurrency=2), spawn("b", worker_concurrency=0))
    key = await make_key("alice")
    events: list[dict[str, Any]] = []
    finished_when_first_event_arrived: bool | None = None
    async with a.client(key) as on_a, b.client(key) as on_b:
        created = await on_a.post("/api/generations", json={"spec": BIG_SPEC})
        assert created.status_code == 201, created.text
        generation_id = UUID(created.json()["id"])
        async with (
            asyncio.timeout(30),
            aconnect_sse(on_b, "GET", f"/api/generations/{generation_id}/stream") as source,
        ):
            assert source.response.status_code == 200
            async for sse in event_frames(source):
                event = json.loads(sse.data)
                assert sse.id == str(event["seq"])
                assert sse.event == event["type"]
                events.append(event)
                if finished_when_first_event_arrived is None:
                    async with pool.acquire() as conn:
                        head = await event_log.select_head(conn, generation_id)
                    finished_when_first_event_arrived = head.is_finished

    assert finished_when_first_event_arrived is False, "the run ended before B's stream opened"
    async with pool.acquire() as conn:
        head = await event_log.select_head(conn, generation_id)
    assert head.is_finished
    assert [e["seq"] for e in events] == list(range(1, head.last_seq + 1))
    types = [e["type"] for e in events]
    assert types[0] == "generation.queued"
    assert types[-1] == "generation.succeeded"
    terminal = {"generation.succeeded", "generation.failed", "generation.cancelled"}
    assert [t for t in types if t in terminal] == ["generation.succeeded"]
    assert all(e["generation_id"] == str(generation_id) for e in events)
    # A ran it (B's worker is off): the started event names A's process.
    started = next(e for e in events if e["type"] == "generation.started")
    assert f":{a.proc.pid}:" in started["data"]["worker"]
    assert f":{b.proc.pid}:" not in started["data"]["worker"]


async def test_events_appended_elsewhere_are_pushed_to_a_stream_at_once(
    spawn: Spawn, make_key: KeyFactory, pool: Pool
) -> None:
    """No poll anywhere near: the stream only re-reads on NOTIFY (or after 15 s of silence),
    and the worker polls every 5 s. Sub-second arrival proves the cross-process push."""
    _, b = await asyncio.gather(spawn("a", worker_concurrency=2), spawn("b", worker_concurrency=0))
    key = await make_key("alice")
    generation_id = await insert_running_generation(pool, "alice")
    arrivals: dict[int, float] = {}
    caught_up = asyncio.Event()

    async def read(client: httpx.AsyncClient) -> None:
        async with aconnect_sse(client, "GET", f"/api/generations/{generation_id}/stream") as s:
            assert s.response.status_code == 200
            async for sse in event_frames(s):
                arrivals[int(sse.id)] = time.monotonic()
                if int(sse.id) == 2:
                    caught_up.set()

    committed: dict[int, float] = {}
    async with b.client(key) as on_b:
        reader = asyncio.create_task(read(on_b))
        try:
            async with asyncio.timeout(20):
                await caught_up.wait()
                for n in range(11):
                    await asyncio.sleep(0.1)
                    event = (
                        NewEvent(EventType.LLM_DELTA, "models", 0.5, f"chunk {n}", {"n": n})
                        if n < 10
                        else NewEvent(EventType.SUCCEEDED, "done", 1.0, "done")
                    )
                    async with pool.acquire() as conn:
                        appended = await event_log.append(conn, generation_id, [event])
                    committed[appended.last_seq] = time.monotonic()
                await reader
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    assert sorted(arrivals) == list(range(1, 14))
    delays = {seq: arrivals[seq] - at for seq, at in committed.items()}
    assert max(delays.values()) < 0.5, f"delays after commit (s): {delays}"


async def test_sigterm_closes_open_streams_and_the_process_exits_promptly(
    spawn: Spawn, make_key: KeyFactory, pool: Pool
) -> None:
    solo = await spawn("solo", worker_concurrency=0)
    key = await make_key("alice")
    generation_id = await insert_running_generation(pool, "alice")
    seqs: list[int] = []
    async with solo.client(key) as client:
        async with (
            asyncio.timeout(STOP_TIMEOUT_S + 5),
            aconnect_sse(client, "GET", f"/api/generations/{generation_id}/stream") as source,
        ):
            assert source.response.status_code == 200
            signalled_at: float | None = None
            async for sse in event_frames(source):
                seqs.append(int(sse.id))
                if int(sse.id) == 2:
                    # The stream is open and idle (nothing more will come): stop the server.
                    solo.proc.send_signal(signal.SIGTERM)
                    signalled_at = time.monotonic()
            assert signalled_at is not None
            stream_closed_after = time.monotonic() - signalled_at
        code = await wait_exit(solo.proc, STOP_TIMEOUT_S - stream_closed_after)

    assert seqs == [1, 2]
    assert stream_closed_after < STOP_TIMEOUT_S
    assert code is not None, f"serve still running {STOP_TIMEOUT_S}s after SIGTERM"
    # A clean shutdown: uvicorn re-raises the SIGTERM it handled once shutdown is complete.
    assert code in (0, -signal.SIGTERM), solo.log()
    assert "Application shutdown complete" in solo.log()


async def test_a_cancel_posted_to_one_process_stops_a_run_held_by_another(
    spawn: Spawn, make_key: KeyFactory, pool: Pool
) -> None:
    a, b = await asyncio.gather(spawn("a", worker_concurrency=2), spawn("b", worker_concurrency=0))
    key = await make_key("alice")
    async with a.client(key) as on_a, b.client(key) as on_b:
        created = await on_a.post("/api/generations", json={"spec": BIG_SPEC})
        generation_id = UUID(created.json()["id"])
        url = f"/api/generations/{generation_id}"
        async with asyncio.timeout(20):
            while len((await on_b.get(f"{url}/events")).json()["events"]) < 5:
                await asyncio.sleep(0.02)
        cancelled_at = time.monotonic()
        answer = await on_b.post(f"{url}/cancel")
        assert answer.status_code == 202, answer.text
        async with asyncio.timeout(10):
            while (await on_b.get(url)).json()["status"] == "running":
                await asyncio.sleep(0.02)
        took = time.monotonic() - cancelled_at
        events = (await on_b.get(f"{url}/events?limit=1000")).json()["events"]
    assert took < 2.0, f"the run on A took {took:.2f}s to stop"
    assert events[-1]["type"] == "generation.cancelled"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events].count("generation.cancelled") == 1
    started = next(e for e in events if e["type"] == "generation.started")
    assert f":{a.proc.pid}:" in started["data"]["worker"]
