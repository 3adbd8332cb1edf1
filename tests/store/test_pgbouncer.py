"""genstream behind a real PgBouncer in transaction mode (``tests/pooler.py``): appends and
reads through the pooler's 2 server connections per database, shared by many more clients;
LISTEN and migrations straight to PostgreSQL (``GENSTREAM_DIRECT_URL``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg
import httpx
import pytest
from httpx_sse import aconnect_sse

from service.access import keys
from service.app import create_app
from service.errors import StoreUnavailable
from service.events import TERMINAL_TYPES, EventType, NewEvent
from service.settings import Settings
from service.store import event_log
from service.store.db import Pool, asyncpg_dsn, create_pool
from service.store.embedded import ADMIN, ROLE
from tests.conftest import serve
from tests.helpers import (
    Database,
    create_via_api,
    events_via_api,
    insert_running_generation,
    state_via_api,
)
from tests.pooler import POOL_SIZE, PgBouncer, running_pgbouncer
from tests.processes import spawn_service, terminate

pytestmark = pytest.mark.slow

TERMINAL = frozenset(kind.value for kind in TERMINAL_TYPES)
RUNS = 6
SPEC: dict[str, Any] = {
    "project": "pooled",
    "entities": [
        {"name": f"Thing{n}", "fields": {f"field_{i}": "str" for i in range(6)}} for n in range(3)
    ],
}


@pytest.fixture(scope="session")
def pgbouncer(server_url: str) -> Iterator[PgBouncer]:
    with running_pgbouncer(server_url) as bouncer:
        yield bouncer


@pytest.fixture
def pooled_url(pgbouncer: PgBouncer, database_url: str) -> str:
    return pgbouncer.url(database_url)


@pytest.fixture
def learnt_outside_transactions(monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """The types asyncpg learns from the catalog in this process outside a transaction (the
    oids of each time): it sets ``jit`` for the session meanwhile, which a pooler may leave
    behind on a server connection (``db._learn_array_types``)."""
    outside: list[list[int]] = []
    learn = vars(asyncpg.connection.Connection)["_introspect_types"]

    async def recording(self: asyncpg.Connection[Any], typeoids: Any, timeout: Any) -> Any:
        if not self.is_in_transaction():
            outside.append(list(typeoids))
        return await learn(self, typeoids, timeout)

    monkeypatch.setattr(asyncpg.connection.Connection, "_introspect_types", recording)
    return outside


@pytest.fixture
async def pooled(pooled_url: str) -> AsyncIterator[Pool]:
    """A pool of more clients (10) than the pooler has server connections for them (2)."""
    pool = await create_pool(pooled_url, min_size=10, max_size=10, pooler="transaction")
    yield pool
    await pool.close()


def database_of(url: str) -> str:
    return urlsplit(asyncpg_dsn(url)).path.lstrip("/")


def servers_of(bouncer: PgBouncer, database: str) -> tuple[int, int]:
    """(server connections, client connections) PgBouncer holds for ``database``."""
    (pool,) = [row for row in bouncer.show("POOLS") if row["database"] == database]
    kinds = ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
    clients = [row for row in bouncer.show("CLIENTS") if row["database"] == database]
    return sum(int(pool[kind]) for kind in kinds), len(clients)


# --- the pooler itself ---------------------------------------------------------------------------


async def test_the_pooler_keeps_no_session_between_transactions(pooled_url: str) -> None:
    """A session-level SET made by one client stays on the server connection it ran on, not
    with the client: the next statement of that client runs elsewhere and does not see it,
    and whoever gets that server connection next does. What genstream must never rely on."""
    connect = [asyncpg.connect(pooled_url, statement_cache_size=0) for _ in range(POOL_SIZE + 1)]
    setter, *holders = await asyncio.gather(*connect)
    try:
        first = await setter.fetchrow(
            "SELECT pg_backend_pid() AS pid, set_config('work_mem', '7MB', false)"
        )
        assert first is not None
        # Open transactions pin server connections until one of them is the setter's.
        opened: list[asyncpg.connection.Connection[asyncpg.Record]] = []
        heir = None
        for holder in holders:
            await holder.execute("BEGIN")
            opened.append(holder)
            if await holder.fetchval("SELECT pg_backend_pid()") == first["pid"]:
                heir = holder
                break
        assert heir is not None, "no client got the setter's server connection"
        for holder in opened:
            if holder is not heir:
                await holder.execute("ROLLBACK")
        after = await setter.fetchrow(
            "SELECT pg_backend_pid() AS pid, current_setting('work_mem') AS work_mem"
        )
        assert after is not None
        assert after["pid"] != first["pid"]
        assert after["work_mem"] != "7MB"
        assert await heir.fetchval("SELECT current_setting('work_mem')") == "7MB"
        await heir.execute("RESET work_mem")
        await heir.execute("COMMIT")
    finally:
        await asyncio.gather(*(conn.close() for conn in (setter, *holders)))


async def test_a_pooler_taken_for_postgresql_is_refused_at_start(pooled_url: str) -> None:
    with pytest.raises(StoreUnavailable, match="GENSTREAM_DATABASE_POOLER=transaction"):
        await create_pool(pooled_url)


async def test_other_float_digits_behind_the_pooler_are_refused_at_start(
    database_url: str, pooled_url: str
) -> None:
    """Behind the pooler genstream cannot ask for extra_float_digits at login: it checks the
    setting its connections get instead, since an event's JSON (and chain hash) hangs on it."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(f"ALTER DATABASE {database_of(database_url)} SET extra_float_digits = 0")
    finally:
        await conn.close()
    with pytest.raises(StoreUnavailable, match="extra_float_digits is 0"):
        await create_pool(pooled_url, pooler="transaction")


async def test_the_servers_scram_verifier_is_all_the_pooler_needs(database: Database) -> None:
    """The README's auth_file: the role's verifier from pg_authid, no password in clear. The
    client's SCRAM proof goes through PgBouncer to PostgreSQL."""
    cluster = database.cluster
    assert cluster.bindir is not None
    # As the superuser, through the cluster's socket (root and its OS user are let in there).
    read = await asyncio.to_thread(
        subprocess.run,
        [
            str(cluster.bindir / "psql"), "-X", "-A", "-t",
            "-h", str(cluster.socket_dir), "-p", str(urlsplit(database.url).port),
            "-U", ADMIN, "-d", "postgres",
            "-c", f"SELECT rolpassword FROM pg_authid WHERE rolname = '{ROLE}'",
        ],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    verifier = read.stdout.strip()
    assert verifier.startswith("SCRAM-SHA-256$")
    with running_pgbouncer(database.url, secret=verifier) as bouncer:
        pool = await create_pool(bouncer.url(database.url), pooler="transaction")
        try:
            assert await pool.fetchval("SELECT current_user") == ROLE
        finally:
            await pool.close()


# --- the event log through it --------------------------------------------------------------------


async def test_appends_through_the_pooler_number_events_once_and_a_retry_stores_nothing(
    learnt_outside_transactions: list[list[int]], pooled: Pool
) -> None:
    """Ten writers on two server connections, each batch sent twice (a retry after an unknown
    COMMIT outcome): every generation's log is 1..N, each key once."""
    ids = await asyncio.gather(*(insert_running_generation(pooled, "alice") for _ in range(10)))
    batches = 15

    async def write(generation_id: UUID) -> list[int]:
        heads = []
        for n in range(batches):
            events = [
                NewEvent(EventType.LLM_DELTA, "models", 0.5, f"chunk {n}.{i}", {"n": n})
                for i in range(2)
            ]
            batch_keys = [f"{n}.{i}" for i in range(2)]
            for _attempt in range(2):
                async with pooled.acquire() as conn:
                    appended = await event_log.append(conn, generation_id, events, keys=batch_keys)
            heads.append(appended.last_seq)
        return heads

    heads = await asyncio.gather(*(write(generation_id) for generation_id in ids))
    for generation_id, seen in zip(ids, heads, strict=True):
        # 2 events written by hand (queued, started), then 2 per batch, once each.
        assert seen == [2 + 2 * (n + 1) for n in range(batches)]
        async with pooled.acquire() as conn:
            stored = await event_log.select_events_after(conn, generation_id, 0, 1000)
        assert [event.seq for event in stored] == list(range(1, 2 + 2 * batches + 1))
    assert learnt_outside_transactions == []


# --- a whole service through it ------------------------------------------------------------------


async def follow(client: httpx.AsyncClient, generation_id: str) -> list[dict[str, Any]]:
    """A run's stream, from its first event to its terminal one."""
    events: list[dict[str, Any]] = []
    async with (
        asyncio.timeout(60),
        aconnect_sse(client, "GET", f"/api/generations/{generation_id}/stream") as source,
    ):
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            event = json.loads(sse.data)
            assert sse.id == str(event["seq"])
            events.append(event)
            if event["type"] in TERMINAL:
                return events
    return events


async def follow_owner(client: httpx.AsyncClient, ids: set[str]) -> dict[str, list[int]]:
    """``GET /api/stream`` until every run in ``ids`` has ended: each run's seqs as sent."""
    seqs: dict[str, list[int]] = defaultdict(list)
    finished: set[str] = set()
    async with asyncio.timeout(60), aconnect_sse(client, "GET", "/api/stream") as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            body = json.loads(sse.data)
            seqs[body["generation_id"]].append(body["seq"])
            if sse.event in TERMINAL:
                finished.add(body["generation_id"])
                if ids <= finished:
                    break
    return dict(seqs)


async def global_feed(client: httpx.AsyncClient, ids: set[str]) -> dict[str, list[int]]:
    """``GET /api/events`` (admin) paged to its end: each run's seqs, in feed order."""
    seqs: dict[str, list[int]] = defaultdict(list)
    cursor = None
    while True:
        params = {"limit": 200, **({"after": cursor} if cursor else {})}
        response = await client.get("/api/events", params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        for event in page["events"]:
            if event["generation_id"] in ids:
                seqs[event["generation_id"]].append(event["seq"])
        if not page["events"]:
            return dict(seqs)
        cursor = page["next_cursor"]


async def test_a_service_behind_the_pooler_runs_and_streams_every_event_once(
    learnt_outside_transactions: list[list[int]],
    pgbouncer: PgBouncer,
    database_url: str,
    pooled_url: str,
    pooled: Pool,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """A ``worker`` process and a ``serve`` (in this process, its worker on too) run the
    generations, with every query through PgBouncer and their LISTEN connections direct.
    Each run's live stream, the owner's stream, the events endpoint and the global feed all
    carry 1..N once, in order; the stats count every run."""
    pooler = {"database_pooler": "transaction", "direct_url": database_url}
    worker = spawn_service(
        "worker",
        "worker",
        tmp_path,
        {
            "DATABASE_URL": pooled_url,
            "GENSTREAM_DATABASE_POOLER": "transaction",
            "GENSTREAM_DIRECT_URL": database_url,
            "GENSTREAM_OFFLINE_DELAY_S": "0.003",
            "GENSTREAM_WORKER_CONCURRENCY": "2",
            "GENSTREAM_DATA_DIR": str(tmp_path / "worker"),
        },
    )
    try:
        app = create_app(
            settings.model_copy(
                update={**pooler, "worker_concurrency": 2, "offline_delay_s": 0.003}
            ),
            pooled_url,
        )
        key = await keys.create_key(pooled, "alice", is_admin=True)
        async with serve(app) as running, running.client(key) as client:
            ids = [(await create_via_api(client, SPEC))["id"] for _ in range(RUNS)]
            owner_stream = asyncio.create_task(follow_owner(client, set(ids)))
            streams = asyncio.gather(*(follow(client, run) for run in ids))
            servers, clients = await asyncio.to_thread(
                servers_of, pgbouncer, database_of(pooled_url)
            )
            streamed = await streams
            owner_seqs = await owner_stream
            stored = {run: await events_via_api(client, run) for run in ids}
            states = {run: await state_via_api(client, run) for run in ids}
            feed_seqs = await global_feed(client, set(ids))
            stats = await client.get("/api/stats")
        assert worker.alive(), worker.log()
    finally:
        await terminate(worker.proc)

    # The test's pool alone holds 10 clients, the two processes more: all on 2 servers.
    assert servers <= POOL_SIZE < clients
    workers = set()
    for run, events in zip(ids, streamed, strict=True):
        last = states[run]["last_seq"]
        assert states[run]["status"] == "succeeded", states[run]
        assert [event["seq"] for event in events] == list(range(1, last + 1))
        assert events == stored[run]  # the same JSON, chain hashes included
        assert events[-1]["type"] == "generation.succeeded"
        assert owner_seqs[run] == list(range(1, last + 1))
        assert feed_seqs[run] == list(range(1, last + 1))
        started = next(event for event in events if event["type"] == "generation.started")
        workers.add(f":{worker.pid}:" in started["data"]["worker"])
    assert workers == {True, False}, "the worker process and serve's worker each ran some"
    assert stats.status_code == 200, stats.text
    assert stats.json()["generations"]["succeeded"] == RUNS
    assert learnt_outside_transactions == []
