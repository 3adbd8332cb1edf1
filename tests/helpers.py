"""What tests share: specs, generations written by hand or through the API, and waiting.

Fixtures live in ``conftest.py``; plain functions live here, imported by name, so that a
test reads as what it does and a helper is fixed in one place. A test waits for something
to happen (``wait_until``, a terminal event), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload
from uuid import UUID, uuid4

import asyncpg
import httpx

from service.access import keys
from service.api.schemas import Event
from service.events import (
    EVENT_DATA,
    TERMINAL_STATUSES,
    EventType,
    NewEvent,
    NewFile,
    VerifyLevel,
)
from service.generation import runs
from service.generation.runs import queued_event
from service.ids import new_generation_id
from service.operations.transfer import export_lines
from service.spec import Spec
from service.store import event_log, generations
from service.store.db import Connection, Pool, asyncpg_dsn, create_pool
from service.store.embedded import EmbeddedCluster
from service.store.event_log import StoredEvent

T = TypeVar("T")

API = "/api/generations"

SPEC: dict[str, Any] = {
    "project": "shop",
    "entities": [
        {"name": "User", "fields": {"email": "str", "age": "int"}},
        {"name": "Order", "fields": {"user": "User", "total": "float"}},
    ],
}

SMALL_SPEC: dict[str, Any] = {
    "project": "p",
    "entities": [{"name": "User", "fields": {"email": "str"}}],
}

EMPTY_SPEC: dict[str, Any] = {"project": "p", "entities": []}


@dataclass
class Database:
    """A PostgreSQL cluster of a test's own (the ``database`` fixture), for tests that stop
    and start it; ``url`` names its migrated database."""

    cluster: EmbeddedCluster
    url: str


async def new_key(url: str, owner: str) -> str:
    """An API key for ``owner`` in the database at ``url`` (one of a test's own clusters)."""
    pool = await create_pool(url, min_size=1, max_size=1)
    try:
        return await keys.create_key(pool, owner)
    finally:
        await pool.close()


async def execute_as_admin(url: str, sql: str) -> None:
    """One statement on a connection of its own: CREATE and DROP DATABASE, on the server
    that holds the tests' databases."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


# --- generations written by hand -------------------------------------------------------------


async def new_generation(
    pool: Pool,
    owner: str = "alice",
    spec: dict[str, Any] = EMPTY_SPEC,
    generation_id: UUID | None = None,
) -> UUID:
    """A queued generation (its ``generation.queued`` is seq 1) that no worker will run unless
    the test starts one: the row is written directly, as the API would, with a UUIDv7 id of
    now unless ``generation_id`` is given (a legacy v4 id, a v7 id of another time)."""
    generation_id = generation_id or new_generation_id()
    async with pool.acquire() as conn:
        await generations.insert_generation(
            conn, generation_id, owner, spec, "offline", None, queued_event()
        )
    return generation_id


async def create_generation(
    pool: Pool,
    owner: str = "alice",
    spec: dict[str, Any] = SPEC,
    limits: runs.CreateLimits = runs.CreateLimits(),  # noqa: B008 (frozen: one default is safe)
    verify: VerifyLevel = "off",
) -> UUID:
    """A generation created as the API creates it (validated spec, offline provider), within
    ``limits`` (none by default), verified to ``verify`` (not at all by default)."""
    return await runs.create_generation(
        pool,
        owner,
        Spec.model_validate(spec),
        provider=None,
        model=None,
        available_providers=frozenset({"offline"}),
        verify=verify,
        limits=limits,
    )


async def insert_running_generation(pool: Pool, owner: str) -> UUID:
    """A generation no worker will claim: started, and held by the test under a long lease."""
    generation_id = uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await generations.insert_generation(
            conn, generation_id, owner, SMALL_SPEC, "offline", None, queued_event()
        )
        await conn.execute(
            "UPDATE generations SET claimed_by = 'the test', attempt = 1, "
            "lease_expires_at = clock_timestamp() + interval '1 hour' WHERE id = $1",
            generation_id,
        )
        await event_log.append(
            conn, generation_id, [NewEvent(EventType.STARTED, "starting", 0.0, "Started by hand")]
        )
    return generation_id


def delta(n: int, stage: str = "models") -> NewEvent:
    return NewEvent(EventType.LLM_DELTA, stage, 0.5, f"chunk {n}", {"n": n})


STARTED = NewEvent(EventType.STARTED, "starting", 0.0, "Started", {"worker": "test"})
DONE = NewEvent(EventType.SUCCEEDED, "done", 1.0, "done")


async def append(pool: Pool, generation_id: UUID | str, *events: NewEvent) -> int:
    """Append ``events`` as one batch; returns the generation's last seq."""
    async with pool.acquire() as conn:
        appended = await event_log.append(conn, UUID(str(generation_id)), events)
    return appended.last_seq


async def finished_generation(
    pool: Pool, owner: str = "alice", generation_id: UUID | None = None
) -> UUID:
    """Queued, started, a delta and a file, succeeded: seq 1..5. Created as the API creates
    it, or (``generation_id`` given: a legacy v4 id, a v7 id of another time) directly."""
    if generation_id is None:
        generation_id = await create_generation(pool, owner)
    else:
        generation_id = await new_generation(pool, owner, SPEC, generation_id)
    file = NewFile("app/main.py", 'print("hi \\u00e9 \\"quoted\\"")\n', "python")
    async with pool.acquire() as conn:
        await event_log.append(
            conn, generation_id, [NewEvent(EventType.STARTED, "starting", 0.0, "Started")]
        )
        await event_log.append(
            conn,
            generation_id,
            [
                NewEvent(EventType.LLM_DELTA, "core", 0.3, "Writing", {"text": "line\nnext"}),
                file.saved("core", 0.6),
            ],
            [file],
        )
        await event_log.append(
            conn, generation_id, [NewEvent(EventType.SUCCEEDED, "done", 1.0, "Finished")]
        )
    return generation_id


async def stored_events(pool: Pool, generation_id: UUID) -> list[StoredEvent]:
    async with pool.acquire() as conn:
        return await event_log.select_events_after(conn, generation_id, 0, 100_000)


async def stored_json(pool: Pool, generation_id: UUID) -> list[str]:
    return [event.json for event in await stored_events(pool, generation_id)]


# --- runs, as their logs show them -----------------------------------------------------------

TERMINAL_TYPES = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})


async def events_of(pool: Pool, generation_id: UUID) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        stored = await event_log.select_events_after(conn, generation_id, 0, 100_000)
    return [json.loads(event.json) for event in stored]


async def generation(
    pool: Pool, generation_id: UUID, owner: str = "alice"
) -> generations.Generation:
    async with pool.acquire() as conn:
        return await generations.select_generation(conn, owner, generation_id)


async def wait_finished(pool: Pool, ids: Sequence[UUID], seconds: float = 20.0) -> None:
    async with asyncio.timeout(seconds):
        for generation_id in ids:
            while True:
                async with pool.acquire() as conn:
                    head = await event_log.select_head(conn, generation_id)
                if head.is_finished:
                    break
                await asyncio.sleep(0.02)


ZERO_CHAIN = "0" * 64


def chain_after(previous: str, event_json: str) -> str:
    """The chain a reader computes for an event (docs/CONTRACT.md): SHA-256 of the previous
    chain's 32 bytes and the event's text without its last member, ``"chain"``."""
    body = event_json[: event_json.rindex(',"chain":')] + "}"
    return hashlib.sha256(bytes.fromhex(previous) + body.encode()).hexdigest()


def types(events: Sequence[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def assert_well_formed(events: Sequence[dict[str, Any]], terminal: EventType) -> None:
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert types(events)[:2] == [EventType.QUEUED, EventType.STARTED]
    assert types(events).count(EventType.STARTED) == 1
    assert [t for t in types(events) if t in TERMINAL_TYPES] == [terminal]
    assert events[-1]["type"] == terminal
    assert events[-1]["status"] == terminal.removeprefix("generation.")


def assert_documented(event: dict[str, Any]) -> None:
    """``event`` fits the published schema of its type (``Event`` in the OpenAPI document),
    with every data key that type requires and none it does not name."""
    Event.model_validate(event)
    data = EVENT_DATA[EventType(event["type"])]
    required, named = data.__required_keys__, set(data.__annotations__)  # type: ignore[attr-defined]
    assert required <= set(event["data"]) <= named, event


# --- exports ---------------------------------------------------------------------------------


async def exported(pool: Pool, *ids: UUID) -> list[dict[str, Any]]:
    """The export of ``ids`` (default: every generation), one parsed object per line: a test
    edits it as an attacker or a broken backup would, then imports ``ndjson(...)`` of it."""
    return [json.loads(line) async for line in export_lines(pool, list(ids) or None)]


def ndjson(records: Sequence[dict[str, Any]]) -> list[str]:
    return [json.dumps(record) + "\n" for record in records]


# --- through the API -------------------------------------------------------------------------


async def create_via_api(
    client: httpx.AsyncClient, spec: dict[str, Any] = SPEC, **options: Any
) -> dict[str, Any]:
    """``POST /api/generations`` (``options``: the body's other keys); the 201's body."""
    response = await client.post(API, json={"spec": spec, **options})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def state_via_api(client: httpx.AsyncClient, generation_id: UUID | str) -> dict[str, Any]:
    response = await client.get(f"{API}/{generation_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def events_via_api(
    client: httpx.AsyncClient, generation_id: UUID | str
) -> list[dict[str, Any]]:
    """Every stored event of a generation through ``GET .../events`` (one page: a test's
    generation has fewer than 1,000)."""
    response = await client.get(f"{API}/{generation_id}/events", params={"after": 0, "limit": 1000})
    assert response.status_code == 200, response.text
    assert not response.json()["has_more"]
    events: list[dict[str, Any]] = response.json()["events"]
    return events


async def wait_for_status(
    client: httpx.AsyncClient,
    generation_id: UUID | str,
    statuses: str | frozenset[str] = frozenset(TERMINAL_STATUSES),
    seconds: float = 30.0,
) -> dict[str, Any]:
    """Poll the generation until its status is one of ``statuses`` (default: any terminal
    one); its state then."""
    wanted = frozenset({statuses}) if isinstance(statuses, str) else statuses

    async def reached() -> dict[str, Any] | None:
        state = await state_via_api(client, generation_id)
        return state if state["status"] in wanted else None

    return await wait_until(reached, f"generation {generation_id} {sorted(wanted)}", seconds)


# --- waiting ---------------------------------------------------------------------------------


@overload
async def wait_until(
    check: Callable[[], Awaitable[T | None]], what: str, seconds: float = ...
) -> T: ...
@overload
async def wait_until(check: Callable[[], T | None], what: str, seconds: float = ...) -> T: ...
async def wait_until(check: Callable[[], Any], what: str, seconds: float = 10.0) -> Any:
    """Poll ``check`` (sync or async) every 20 ms until it returns something other than None
    or False; that value. Fails with ``what`` after ``seconds``: a bound, never a pause."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {seconds}s: {what}")
        await asyncio.sleep(0.02)


async def partitions_holding(conn: Connection, table: str, generation_id: UUID) -> set[str]:
    """The partitions holding the run's rows of ``table``."""
    rows = await conn.fetch(
        f"SELECT DISTINCT tableoid::regclass::text AS part FROM {table} WHERE generation_id = $1",
        generation_id,
    )
    return {row["part"] for row in rows}
