"""The Python client against real ``python -m service serve`` processes: follow rides out a
SIGKILL and restart of the server and a restart of PostgreSQL, yielding seq 1..N exactly once;
a finished run is followed at once; an expired stream token is replaced; errors come typed
with the server's message; the sync wrapper does a script's whole job."""

from __future__ import annotations

import asyncio
import io
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from uuid import UUID

import httpx
import pytest
from genstream_client import (
    AsyncGenstream,
    Conflict,
    Event,
    Genstream,
    InvalidRequest,
    NotFound,
    Unauthorized,
)

from service.events import EventType, NewEvent
from service.store.db import Pool, create_pool
from tests.conftest import KeyFactory
from tests.helpers import (
    DONE,
    SPEC,
    Database,
    append,
    delta,
    insert_running_generation,
    new_generation,
    new_key,
    stored_json,
    wait_until,
)
from tests.processes import RestartableServe, readyz, terminate

pytestmark = pytest.mark.slow

RUN_TIMEOUT_S = 60.0

# SPEC streams ~460 chunks: at 8 ms a chunk a run lasts ~4 s, long enough to be cut in the
# middle. A lease of 2 s lets the restarted server's worker take the run over soon after.
SLOW_RUN = {
    "worker_concurrency": "2",
    "offline_delay_s": "0.008",
    "lease_s": "2",
    "worker_poll_s": "0.5",
    "sse_retry_ms": "200",
    "listener_reconnect_max_s": "0.5",
}


def settings_env(**settings: str) -> dict[str, str]:
    return {f"GENSTREAM_{name.upper()}": value for name, value in settings.items()}


StartServe = Callable[..., Awaitable[RestartableServe]]


@pytest.fixture
async def start_serve(database_url: str, tmp_path: Path) -> AsyncIterator[StartServe]:
    """``await start_serve(**settings)``: a ready, restartable `serve` on the test database
    (``database_url=`` another), stream tokens signed with one secret across restarts."""
    servers: list[RestartableServe] = []

    async def start(database_url: str = database_url, **settings: str) -> RestartableServe:
        env = {
            "DATABASE_URL": database_url,
            "GENSTREAM_DATA_DIR": str(tmp_path / "data"),
            **settings_env(stream_token_secret="client-test-secret", **settings),
        }
        server = RestartableServe(tmp_path / f"server-{len(servers)}", env)
        servers.append(server)
        await server.start()
        return server

    yield start
    await asyncio.gather(
        *(terminate(p.proc) for server in servers for p in server.processes if p.alive())
    )


@dataclass
class Exchange:
    at: float
    method: str
    path: str
    status: int
    query: dict[str, str]


@dataclass
class Recorder:
    """Every response the client got (headers only: a stream's is recorded when it opens)."""

    exchanges: list[Exchange] = field(default_factory=list)

    async def __call__(self, response: httpx.Response) -> None:
        query = {k: v[-1] for k, v in parse_qs(response.request.url.query.decode()).items()}
        self.exchanges.append(
            Exchange(
                time.monotonic(),
                response.request.method,
                response.request.url.path,
                response.status_code,
                query,
            )
        )

    def streams(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.path.endswith("/stream")]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=30.0, event_hooks={"response": [self]})


@dataclass
class Following:
    """A follow running in a task; each event with the time it arrived."""

    client: AsyncGenstream
    generation_id: str
    arrived: list[tuple[float, Event]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self, until: Callable[[Event], bool] = lambda _: False) -> asyncio.Event:
        """Start following; the returned flag is set at the first event ``until`` accepts."""
        reached = asyncio.Event()

        async def run() -> None:
            async for event in self.client.follow(self.generation_id):
                self.arrived.append((time.monotonic(), event))
                if until(event):
                    reached.set()

        self.task = asyncio.create_task(run())
        return reached

    async def reach(self, flag: asyncio.Event) -> None:
        """Until ``flag`` is set; fails at once if the follow ended or raised first."""
        assert self.task is not None
        waiting = asyncio.create_task(flag.wait())
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await asyncio.wait({waiting, self.task}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if self.task.done():
            self.task.result()
            raise AssertionError("the follow ended before the point the test waits for")

    async def end(self) -> list[Event]:
        assert self.task is not None
        async with asyncio.timeout(RUN_TIMEOUT_S):
            await self.task
        return self.events

    @property
    def events(self) -> list[Event]:
        return [event for _, event in self.arrived]


def second_phase(event: Event) -> bool:
    return event.type == "phase.started" and event.data.get("number") == 2


def assert_whole_log(events: list[Event], stored: list[str]) -> None:
    """Seq 1..N exactly once, in order, ending in success: the log, text for text."""
    seqs = [event.seq for event in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert [event.raw for event in events] == stored
    assert [e.type for e in events if e.is_terminal] == ["generation.succeeded"]
    assert events[-1].type == "generation.succeeded"


async def test_follow_rides_out_a_sigkill_and_restart_of_the_server(
    start_serve: StartServe, make_key: KeyFactory, pool: Pool
) -> None:
    server = await start_serve(**SLOW_RUN)
    key = await make_key("alice")
    recorder = Recorder()
    async with (
        recorder.client() as http,
        AsyncGenstream(server.base_url, key, http_client=http) as client,
    ):
        created = await client.create(SPEC)
        following = Following(client, created.id)
        await following.reach(following.start(until=second_phase))
        before = len(following.arrived)
        killed_at = time.monotonic()
        await server.kill()
        await server.start()
        ready_at = time.monotonic()
        events = await following.end()

    assert_whole_log(events, await stored_json(pool, UUID(created.id)))
    assert len(events) > before, "nothing arrived after the restart"
    assert "generation.resumed" in [e.type for e in events[before:]], "not taken over"
    # The first stream opened after the kill (it may open before wait_ready sees /readyz).
    reopened = next((e for e in recorder.streams() if e.at > killed_at and e.status == 200), None)
    assert reopened is not None
    first_after = following.arrived[before][0]
    print(
        f"sigkill: {len(events)} events, {before} before the kill; server down "
        f"{ready_at - killed_at:.2f} s; stream reopened {reopened.at - ready_at:.2f} s after "
        f"ready; first event {first_after - killed_at:.2f} s after the kill; "
        f"{len(recorder.streams())} stream requests"
    )


async def test_follow_rides_out_a_postgresql_restart(
    database: Database, start_serve: StartServe
) -> None:
    server = await start_serve(database_url=database.url, **SLOW_RUN)
    key = await new_key(database.url, "alice")
    async with AsyncGenstream(server.base_url, key) as client:
        created = await client.create(SPEC)
        following = Following(client, created.id)
        await following.reach(following.start(until=second_phase))
        before = len(following.arrived)
        await asyncio.to_thread(database.cluster.stop, "fast")
        stopped_at = time.monotonic()

        async def outage_seen() -> bool:
            return await readyz(server.current) == 503

        await wait_until(outage_seen, "the server to see the outage", RUN_TIMEOUT_S)
        assert following.task is not None
        assert not following.task.done(), "the follow ended during the outage"
        assert await asyncio.to_thread(database.cluster.start) == database.url
        started_at = time.monotonic()
        events = await following.end()

    pool = await create_pool(database.url, min_size=1, max_size=1)
    try:
        assert_whole_log(events, await stored_json(pool, UUID(created.id)))
    finally:
        await pool.close()
    assert len(events) > before
    first_after = next(at for at, _ in following.arrived[before:] if at > started_at)
    print(
        f"postgresql restart: {len(events)} events, {before} before; down "
        f"{started_at - stopped_at:.2f} s; first event {first_after - started_at:.2f} s after "
        "it was back"
    )


async def test_a_finished_run_is_followed_at_once_and_after_its_last_seq_is_nothing(
    start_serve: StartServe, make_key: KeyFactory, pool: Pool
) -> None:
    server = await start_serve(worker_concurrency="2", offline_delay_s="0")
    key = await make_key("alice")
    recorder = Recorder()
    async with (
        recorder.client() as http,
        AsyncGenstream(server.base_url, key, http_client=http) as client,
    ):
        created = await client.create(SPEC)

        async def finished() -> bool:
            return (await client.get(created.id)).status == "succeeded"

        await wait_until(finished, "the run's end", RUN_TIMEOUT_S)
        started = time.monotonic()
        events = [event async for event in client.follow(created.id)]
        took = time.monotonic() - started
        last = events[-1].seq
        assert [event async for event in client.follow(created.id, after=last)] == []
        assert [e.seq async for e in client.follow(created.id, after=3)] == list(range(4, last + 1))
        stored = [event async for event in client.events(created.id)]

    assert_whole_log(events, await stored_json(pool, UUID(created.id)))
    assert [e.raw for e in stored] == [e.raw for e in events]
    assert [e.status for e in recorder.streams()] == [200, 204, 200], "one connection each"
    assert recorder.streams()[1].query["token"], "resumed with a token, never the key"
    print(f"finished run: {len(events)} events followed in {took:.3f} s")


async def test_an_expired_stream_token_is_replaced_and_the_follow_goes_on(
    start_serve: StartServe, make_key: KeyFactory, pool: Pool
) -> None:
    """Tokens last 2 s here (1 to 2 s: the server truncates the expiry to whole seconds).
    The follow's token expires while its stream is open (a token is checked when a stream
    opens); the server restarts, and the reconnect's 401 makes the client fetch a fresh token
    with its key and go on."""
    server = await start_serve(worker_concurrency="0", stream_token_ttl_s="2", sse_retry_ms="100")
    key = await make_key("alice")
    generation_id = await insert_running_generation(pool, "alice")
    recorder = Recorder()
    async with (
        recorder.client() as http,
        AsyncGenstream(server.base_url, key, http_client=http) as client,
    ):
        following = Following(client, str(generation_id))
        await following.reach(following.start(until=lambda event: event.seq == 2))
        token = recorder.streams()[0].query["token"]

        async def expired() -> bool:
            async with (
                httpx.AsyncClient(base_url=server.base_url) as anonymous,
                anonymous.stream(
                    "GET", f"/api/generations/{generation_id}/stream", params={"token": token}
                ) as response,
            ):
                return response.status_code == 401

        await wait_until(expired, "the follow's token to expire", 10.0)
        await server.stop()
        await server.start()
        await append(pool, generation_id, *(delta(n) for n in range(5)), DONE)
        events = await following.end()

    assert_whole_log(events, await stored_json(pool, generation_id))
    answers = [(e.method, e.path.rsplit("/", 1)[-1], e.status) for e in recorder.exchanges]
    refused = answers.index(("GET", "stream", 401))
    assert answers[refused + 1 : refused + 3] == [
        ("POST", "stream-token", 201),
        ("GET", "stream", 200),
    ], answers


async def test_errors_are_typed_and_carry_the_servers_message(
    start_serve: StartServe, make_key: KeyFactory
) -> None:
    server = await start_serve(worker_concurrency="2", offline_delay_s="0")
    key = await make_key("alice")
    unknown = "00000000-0000-4000-8000-000000000000"
    async with httpx.AsyncClient(base_url=server.base_url) as raw:
        said_401 = (await raw.get(f"/api/generations/{unknown}")).json()["detail"]
        headers = {"Authorization": f"Bearer {key}"}
        said_404 = (await raw.get(f"/api/generations/{unknown}", headers=headers)).json()["detail"]

    async with AsyncGenstream(server.base_url, "gsk_not_a_key") as stranger:
        with pytest.raises(Unauthorized) as refused:
            await stranger.get(unknown)
        with pytest.raises(Unauthorized):
            await anext(stranger.follow(unknown))
    assert refused.value.status == 401
    assert refused.value.detail
    assert refused.value.detail in str(refused.value)
    assert said_401 != ""

    async with AsyncGenstream(server.base_url, key) as client:
        with pytest.raises(NotFound) as missing:
            await client.get(unknown)
        assert missing.value.detail == said_404
        assert said_404 in str(missing.value)
        with pytest.raises(NotFound, match="not found"):
            await anext(client.follow(unknown))
        with pytest.raises(InvalidRequest) as invalid:
            await client.create({"project": "p", "entities": [{"name": 3}]})
        assert invalid.value.status == 400
        assert invalid.value.errors, "each problem the server found"
        created = await client.create(SPEC)
        events = [event async for event in client.follow(created.id)]
        assert events[-1].type == "generation.succeeded"
        with pytest.raises(Conflict):
            await client.cancel(created.id)
        with pytest.raises(NotFound, match="not found"):
            await client.file(created.id, "no/such/file.py")


def script(base_url: str, key: str) -> dict[str, Any]:
    """What a script does with the sync client: create, follow, list, fetch the files."""
    with Genstream(base_url, key) as genstream:
        created = genstream.create(SPEC)
        followed = list(genstream.follow(created.id))
        files = genstream.files(created.id)
        return {
            "created": created,
            "followed": followed,
            "stored": list(genstream.events(created.id)),
            "listed": [g.id for g in genstream.list(limit=1)],
            "state": genstream.get(created.id),
            "files": files,
            "first": genstream.file(created.id, files[0].path),
            "archive": genstream.archive(created.id),
        }


async def test_the_sync_client_creates_follows_and_fetches_the_files(
    start_serve: StartServe, make_key: KeyFactory, pool: Pool
) -> None:
    server = await start_serve(worker_concurrency="2", offline_delay_s="0")
    key = await make_key("alice")
    async with AsyncGenstream(server.base_url, key) as client:
        earlier = await client.create(SPEC)  # so that list() has a second page to walk
    done = await asyncio.to_thread(script, server.base_url, key)

    created = done["created"]
    assert_whole_log(done["followed"], await stored_json(pool, UUID(created.id)))
    assert [e.raw for e in done["stored"]] == [e.raw for e in done["followed"]]
    assert done["listed"] == [created.id, earlier.id]
    assert done["state"].status == "succeeded"
    assert done["state"].last_seq == done["followed"][-1].seq
    saved = [e.data["path"] for e in done["followed"] if e.type == "file.saved"]
    assert sorted(f.path for f in done["files"]) == sorted(saved)
    archive = zipfile.ZipFile(io.BytesIO(done["archive"]))
    assert sorted(archive.namelist()) == sorted(saved)
    first = done["files"][0].path
    assert archive.read(first).decode() == done["first"]


async def test_a_retried_run_is_followed_through_both_attempts_to_its_last_end(
    start_serve: StartServe, make_key: KeyFactory, pool: Pool
) -> None:
    """Its first attempt's terminal event is not the end: the log goes on through
    generation.retried, and so does the follow, to the last terminal event."""
    server = await start_serve(worker_concurrency="2", offline_delay_s="0")
    key = await make_key("alice")
    generation_id = await new_generation(pool, "alice", SPEC)
    failed = NewEvent(EventType.FAILED, "core", 0.1, "Failed", {"error": "e"})
    await append(pool, generation_id, NewEvent(EventType.STARTED, "starting", 0.0, "S"), failed)
    async with AsyncGenstream(server.base_url, key) as client:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            answer = await http.post(
                f"/api/generations/{generation_id}/retry",
                headers={"Authorization": f"Bearer {key}"},
            )
        assert answer.status_code == 202, answer.text

        async def finished() -> bool:
            return (await client.get(str(generation_id))).status == "succeeded"

        await wait_until(finished, "the retried run's end", RUN_TIMEOUT_S)
        events = [event async for event in client.follow(str(generation_id))]
    types = [event.type for event in events]
    assert types[2:4] == ["generation.failed", "generation.retried"]
    assert [e.type for e in events if e.is_terminal] == [
        "generation.failed",
        "generation.succeeded",
    ]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.raw for e in events] == await stored_json(pool, generation_id)
