from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import pytest

from service.errors import InvalidRequest
from service.operations.transfer import export_lines, import_lines
from service.store import event_log
from service.store.db import Pool, create_pool
from tests.conftest import AppFactory
from tests.helpers import SPEC


@pytest.fixture
async def other_pool(other_database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(other_database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()


async def run_to_the_end(app_factory: AppFactory, api_key: str, count: int) -> list[UUID]:
    ids: list[UUID] = []
    async with app_factory(offline_delay_s=0.0) as running, running.client(api_key) as client:
        for _ in range(count):
            response = await client.post("/api/generations", json={"spec": SPEC})
            assert response.status_code == 201, response.text
            ids.append(UUID(response.json()["id"]))
        for generation_id in ids:
            while (await client.get(f"/api/generations/{generation_id}")).json()["status"] in (
                "queued",
                "running",
            ):
                await asyncio.sleep(0.02)
    return ids


async def snapshot(pool: Pool, generation_id: UUID) -> dict[str, Any]:
    """What a client of either genstream can see of a generation."""
    async with pool.acquire() as conn:
        events = await event_log.select_events_after(conn, generation_id, 0, 10_000)
        row = await conn.fetchrow(
            "SELECT owner, status, stage, progress, last_seq, spec::jsonb::text AS spec,"
            " created_at, finished_at FROM generations WHERE id = $1",
            generation_id,
        )
        files = await conn.fetch(
            "SELECT path, content, sha256, seq FROM generated_files WHERE generation_id = $1"
            " ORDER BY path",
            generation_id,
        )
    return {
        "events": [event.json for event in events],
        "row": dict(row) if row else None,
        "files": [dict(file) for file in files],
    }


async def collect(pool: Pool, **choose: object) -> list[str]:
    return [line async for line in export_lines(pool, **choose)]  # type: ignore[arg-type]


async def test_an_export_imported_elsewhere_gives_byte_identical_events_and_files(
    app_factory: AppFactory, api_key: str, pool: Pool, other_pool: Pool
) -> None:
    ids = await run_to_the_end(app_factory, api_key, 2)
    lines = await collect(pool)

    result = await import_lines(other_pool, lines)

    assert result.stored == ids
    assert result.skipped == []
    for generation_id in ids:
        here, there = await snapshot(pool, generation_id), await snapshot(other_pool, generation_id)
        assert there == here
        assert len(here["events"]) > 10
        assert here["files"]
    # Imported events join the importing database's global feed.
    async with other_pool.acquire() as conn:
        feed = await event_log.select_feed(conn, event_log.FeedPosition(), 10_000)
    stored = [len((await snapshot(pool, g))["events"]) for g in ids]
    assert len(feed) == sum(stored)


async def test_importing_the_same_export_twice_changes_nothing(
    app_factory: AppFactory, api_key: str, pool: Pool, other_pool: Pool
) -> None:
    (generation_id,) = await run_to_the_end(app_factory, api_key, 1)
    lines = await collect(pool, ids=[generation_id])
    await import_lines(other_pool, lines)
    before = await snapshot(other_pool, generation_id)

    again = await import_lines(other_pool, lines)

    assert again.stored == []
    assert again.skipped == [generation_id]
    assert await snapshot(other_pool, generation_id) == before


async def test_export_chooses_by_id_and_by_creation_time(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    first, second = await run_to_the_end(app_factory, api_key, 2)
    async with pool.acquire() as conn:
        created = await conn.fetchval("SELECT created_at FROM generations WHERE id = $1", second)

    def generations_in(lines: list[str]) -> list[str]:
        return [
            json.loads(line)["generation"]["id"] for line in lines if '"generation"' in line[:15]
        ]

    assert generations_in(await collect(pool, ids=[first])) == [str(first)]
    assert generations_in(await collect(pool, since=created)) == [str(second)]
    assert generations_in(await collect(pool, until=created)) == [str(first)]


async def test_a_broken_export_is_refused_and_stores_nothing_of_the_broken_generation(
    other_pool: Pool,
) -> None:
    with pytest.raises(InvalidRequest, match="line 1"):
        await import_lines(other_pool, ['{"event": {"generation_id": "x"}}'])
    with pytest.raises(InvalidRequest, match="line 2"):
        await import_lines(other_pool, ['{"generation": {"id": "1"}}', "not json"])
