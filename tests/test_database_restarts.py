"""PostgreSQL goes away mid-run: streams, runs and the server process ride it out.

Real processes, real restarts: a ``python -m service serve`` subprocess (HTTP + worker) runs
three generations against a DEDICATED throwaway cluster (restarting it must not disturb the
other tests' server), while this test stops and starts PostgreSQL, or kills every backend of
the database, in the middle of the runs. Whatever happens, every stream must deliver every
event exactly once (seq 1..N, ending in ``generation.succeeded``), and the server must live on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
import httpx
import pytest
from httpx_sse import aconnect_sse

from service.store import event_log
from service.store.db import asyncpg_dsn
from tests.helpers import SPEC, Database, new_key, wait_until
from tests.processes import ServiceProcess, readyz, spawn_service, terminate, wait_ready

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 30.0
RECOVERY_TIMEOUT_S = 30.0
RUNS_TIMEOUT_S = 60.0
TERMINAL = {"generation.succeeded", "generation.failed", "generation.cancelled"}

# SPEC streams ~460 chunks of 64 characters: at 8 ms a chunk a run lasts ~3.7 s, long enough to
# be cut in the middle, short enough to keep the test quick.
OFFLINE_DELAY_S = "0.008"
LEASE_S = "3"


@pytest.fixture
async def server(database: Database, tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    process = spawn_service(
        "serve",
        "serve",
        tmp_path,
        {
            "DATABASE_URL": database.url,
            "GENSTREAM_DATA_DIR": str(tmp_path / "data"),
            "GENSTREAM_STREAM_TOKEN_SECRET": "restarts-test-secret",
            "GENSTREAM_OFFLINE_DELAY_S": OFFLINE_DELAY_S,
            "GENSTREAM_LEASE_S": LEASE_S,
            "GENSTREAM_WORKER_CONCURRENCY": "4",
            "GENSTREAM_WORKER_POLL_S": "0.5",
            "GENSTREAM_LISTENER_RECONNECT_MAX_S": "0.5",
        },
    )
    try:
        await wait_ready(process, READY_TIMEOUT_S)
        yield process
    finally:
        await terminate(process.proc)


async def stored_events(database: Database, generation_id: UUID) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(asyncpg_dsn(database.url))
    try:
        stored = await event_log.select_events_after(conn, generation_id, 0, 100_000)
    finally:
        await conn.close()
    return [json.loads(event.json) for event in stored]


@dataclass
class Follower:
    """One generation's stream, read like EventSource does: reconnect after a drop with
    ``Last-Event-ID``; stop after the terminal event (or on 204)."""

    generation_id: UUID
    events: list[dict[str, Any]] = field(default_factory=list)
    connections: int = 0
    refused: list[int] = field(default_factory=list)  # statuses of failed (re)connects
    drops: list[str] = field(default_factory=list)  # why a connection ended early
    mid_run: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last_seq(self) -> int:
        return int(self.events[-1]["seq"]) if self.events else 0

    @property
    def finished(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] in TERMINAL

    async def run(self, client: httpx.AsyncClient) -> None:
        url = f"/api/generations/{self.generation_id}/stream"
        while not self.finished:
            headers = {"Last-Event-ID": str(self.last_seq)} if self.events else {}
            try:
                async with aconnect_sse(client, "GET", url, headers=headers) as source:
                    status = source.response.status_code
                    if status == 204:
                        return
                    if status != 200:
                        self.refused.append(status)
                        await asyncio.sleep(0.2)
                        continue
                    self.connections += 1
                    async for sse in source.aiter_sse():
                        if not sse.data:
                            # The leading retry: frame, or a keepalive comment: httpx-sse
                            # dispatches an empty event on it once an id was seen (browsers
                            # do not: an event with no data is never fired).
                            continue
                        event = json.loads(sse.data)
                        assert sse.id == str(event["seq"])
                        assert sse.event == event["type"]
                        self.events.append(event)
                        if event["type"] not in ("generation.queued", "generation.started"):
                            self.mid_run.set()
                        if event["type"] in TERMINAL:
                            return
                    self.drops.append("closed before the terminal event")
            except httpx.TransportError as exc:
                self.drops.append(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(0.2)


async def check_complete(database: Database, follower: Follower) -> None:
    """Every event exactly once, in order, ending in success, and just what the log holds."""
    seqs = [event["seq"] for event in follower.events]
    assert seqs == list(range(1, len(seqs) + 1)), (follower.generation_id, seqs)
    assert follower.events[-1]["type"] == "generation.succeeded", follower.events[-1]
    assert [e["type"] for e in follower.events if e["type"] in TERMINAL] == ["generation.succeeded"]
    assert follower.events == await stored_events(database, follower.generation_id)


Disruption = Callable[[Database, ServiceProcess, list[Follower]], Awaitable[None]]


async def run_through(
    database: Database, server: ServiceProcess, disrupt: Disruption
) -> list[Follower]:
    """Start three generations, follow their streams, disrupt PostgreSQL mid-run, and return
    the followers once every stream has ended."""
    key = await new_key(database.url, "alice")
    async with server.client(key) as client:
        followers: list[Follower] = []
        for _ in range(3):
            created = await client.post("/api/generations", json={"spec": SPEC})
            assert created.status_code == 201, created.text
            followers.append(Follower(UUID(created.json()["id"])))
        tasks = [asyncio.create_task(f.run(client)) for f in followers]
        try:
            async with asyncio.timeout(RUNS_TIMEOUT_S):
                await asyncio.gather(*(f.mid_run.wait() for f in followers))
                assert not any(f.finished for f in followers), "runs ended before the outage"
                await disrupt(database, server, followers)
                await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return followers


def report(name: str, followers: list[Follower], **extra: object) -> None:
    """What happened, for ``pytest -s`` (and for the failure output)."""
    for f in followers:
        types = [e["type"] for e in f.events]
        print(
            f"{name}: {f.generation_id} events={len(f.events)} connections={f.connections} "
            f"refused={f.refused} drops={f.drops} resumed={types.count('generation.resumed')}"
        )
    for key, value in extra.items():
        print(f"{name}: {key}={value}")


async def test_a_restarted_cluster_comes_back_on_the_port_its_clients_know(
    database: Database,
) -> None:
    """A fast shutdown closes the clients' connections from the server's side, which leaves
    TIME_WAIT sockets on the server's port for a minute. PostgreSQL binds with SO_REUSEADDR, so
    the port is usable; a cluster that moves elsewhere strands every running process, whose
    DATABASE_URL still names the old port."""
    conns = [await asyncpg.connect(asyncpg_dsn(database.url)) for _ in range(3)]
    try:
        for conn in conns:
            assert await conn.fetchval("SELECT 1") == 1
        await asyncio.to_thread(database.cluster.stop, "fast")
        await asyncio.sleep(0.2)  # the clients see the close and answer it
    finally:
        for conn in conns:
            conn.terminate()
    restarted = await asyncio.to_thread(database.cluster.start)
    assert restarted == database.url
    conn = await asyncpg.connect(asyncpg_dsn(database.url))
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await conn.close()


async def test_streams_and_runs_ride_out_a_postgresql_restart(
    database: Database, server: ServiceProcess
) -> None:
    port = urlsplit(database.url).port
    during_outage: list[int] = []
    after_outage: list[int] = []
    restarted_url: list[str] = []

    async def restart(
        database: Database, server: ServiceProcess, followers: list[Follower]
    ) -> None:
        await asyncio.to_thread(database.cluster.stop, "fast")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            during_outage.append(await readyz(server))
            await asyncio.sleep(0.1)
        assert not all(f.finished for f in followers), "every run ended during the outage"
        restarted_url.append(await asyncio.to_thread(database.cluster.start))
        # The server keeps its DATABASE_URL: PostgreSQL must come back on the same port.
        assert restarted_url[0] == database.url, (restarted_url[0], database.url)
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while (status := await readyz(server, listener=True)) != 200:
            assert time.monotonic() < deadline, f"/readyz still {status}:\n{server.log()}"
            await asyncio.sleep(0.1)
        after_outage.append(status)

    followers = await run_through(database, server, restart)
    report("restart", followers, port=port, readyz_during=during_outage)

    assert during_outage, "/readyz was never asked during the outage"
    assert set(during_outage) == {503}, during_outage
    assert after_outage == [200]
    for follower in followers:
        await check_complete(database, follower)
    assert server.proc.poll() is None, server.log()
    assert await readyz(server, listener=True) == 200


async def test_streams_and_runs_ride_out_killed_database_connections(
    database: Database, server: ServiceProcess
) -> None:
    killed: list[int] = []

    async def kill_backends(
        database: Database, server: ServiceProcess, followers: list[Follower]
    ) -> None:
        admin = await asyncpg.connect(asyncpg_dsn(database.url))
        try:
            for n in range(3):
                if n:
                    await asyncio.sleep(0.5)
                killed.append(
                    await admin.fetchval(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE pid <> pg_backend_pid() AND datname = current_database()"
                    )
                )
        finally:
            await admin.close()
        assert not all(f.finished for f in followers), "every run ended before the last kill"

    followers = await run_through(database, server, kill_backends)
    report("kill", followers, killed=killed)

    assert len(killed) == 3
    assert all(count >= 1 for count in killed), killed  # at least the LISTEN connection
    for follower in followers:
        await check_complete(database, follower)
    assert server.proc.poll() is None, server.log()
    async with asyncio.timeout(RECOVERY_TIMEOUT_S):
        await wait_ready(server, RECOVERY_TIMEOUT_S)


@dataclass
class RawStream:
    """One stream connection read line by line, as the SSE grammar has it."""

    status: int = 0
    content_type: str = ""
    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    opened: asyncio.Event = field(default_factory=asyncio.Event)  # refused, or 2 keepalives

    async def read(self, client: httpx.AsyncClient, url: str, **kwargs: Any) -> None:
        async with client.stream("GET", url, **kwargs) as response:
            self.status = response.status_code
            self.content_type = response.headers.get("content-type", "")
            if self.status != 200:
                await response.aread()
                self.opened.set()
                return
            async for line in response.aiter_lines():
                self.lines.append(line)
                if self.lines.count(": keepalive") >= 2:
                    self.opened.set()
                if line.startswith("data: "):
                    self.events.append(json.loads(line.removeprefix("data: ")))
                    if self.events[-1]["type"] in TERMINAL:
                        return


async def test_a_stream_opened_during_an_outage_keeps_its_client_until_the_database_answers(
    database: Database, server: ServiceProcess
) -> None:
    """An EventSource answered 503 gives up for good. A stream token is checked without the
    database, so a stream opened with one while PostgreSQL is down answers 200 at once,
    sends retry: and keepalives, and replays and follows the log once the database is back.
    An API key cannot be checked then: that is a 503 with Retry-After (scripts honour it)."""
    key = await new_key(database.url, "alice")
    async with server.client(key) as client:
        created = await client.post("/api/generations", json={"spec": SPEC})
        assert created.status_code == 201, created.text
        body = created.json()
        url, token = body["stream_url"], body["stream_token"]

        async def mid_run() -> bool:
            response = await client.get(body["events_url"])
            return len(response.json()["events"]) >= 3

        await wait_until(mid_run, "the run's third event", RUNS_TIMEOUT_S)
        await asyncio.to_thread(database.cluster.stop, "fast")
        opened_during_outage = RawStream()
        async with server.client() as anonymous:
            reader = asyncio.create_task(
                opened_during_outage.read(anonymous, url, params={"token": token})
            )
            try:
                async with asyncio.timeout(RECOVERY_TIMEOUT_S):
                    await opened_during_outage.opened.wait()
                assert opened_during_outage.status == 200, "refused during the outage"
                assert not opened_during_outage.events
                with_key = await client.get(url, headers={"Accept": "text/event-stream"})
                other = "A" if token[-1] != "A" else "B"
                forged = await anonymous.get(url, params={"token": token[:-1] + other})
            finally:
                restarted = await asyncio.to_thread(database.cluster.start)
            assert restarted == database.url
            try:
                async with asyncio.timeout(RUNS_TIMEOUT_S):
                    await reader
            finally:
                reader.cancel()

    assert opened_during_outage.status == 200
    assert opened_during_outage.content_type.startswith("text/event-stream")
    assert opened_during_outage.lines[0].startswith("retry: ")
    assert opened_during_outage.lines[2] == ": keepalive"
    seqs = [event["seq"] for event in opened_during_outage.events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert opened_during_outage.events == await stored_events(database, UUID(body["id"]))
    assert opened_during_outage.events[-1]["type"] == "generation.succeeded"
    assert with_key.status_code == 503, with_key.text
    assert int(with_key.headers["retry-after"]) > 0
    assert with_key.json()["status"] == 503
    assert forged.status_code == 401  # a token is still checked: no database needed for that
    assert server.proc.poll() is None, server.log()
