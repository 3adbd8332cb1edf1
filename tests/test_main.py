"""The command line, run as real subprocesses against the test database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg

from service import keys
from service.events import EventType, NewEvent, NewFile
from service.generation import runs
from service.settings import PROJECT_ROOT
from service.spec import Spec
from service.store import event_log
from service.store.db import Pool, asyncpg_dsn, create_pool
from service.store.migrate import current_revisions, head_revisions
from tests.conftest import SPEC

CLI_TIMEOUT_S = 60


async def cli(*args: str, database_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def finished_generation(pool: Pool) -> UUID:
    """A generation written by hand: queued, started, a delta, a file, succeeded (seq 1..5)."""
    generation_id = await runs.create_generation(
        pool,
        "alice",
        Spec.model_validate(SPEC),
        provider=None,
        model=None,
        available_providers=frozenset({"offline"}),
    )
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


async def stored_json(pool: Pool, generation_id: UUID) -> list[str]:
    async with pool.acquire() as conn:
        events = await event_log.select_events_after(conn, generation_id, 0, 1000)
    return [event.json for event in events]


async def test_help_lists_every_command() -> None:
    result = await cli("--help", database_url=None)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "worker", "migrate", "keys", "replay"):
        assert command in result.stdout


async def test_keys_create_prints_only_a_key_that_authenticates_its_owner(
    database_url: str, pool: Pool
) -> None:
    result = await cli("keys", "create", "--owner", "bob", database_url=database_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    key = lines[0]
    assert result.stdout == key + "\n"
    assert key.strip() == key
    assert key.startswith(keys.KEY_PREFIX)
    owner = await keys.authenticate(pool, key)
    assert owner.owner == "bob"
    assert owner.is_admin is False


async def test_migrate_brings_an_empty_database_to_head_and_is_idempotent(
    empty_database_url: str,
) -> None:
    first = await cli("migrate", database_url=empty_database_url)
    assert first.returncode == 0, first.stderr
    second = await cli("migrate", database_url=empty_database_url)
    assert second.returncode == 0, second.stderr
    conn = await asyncpg.connect(asyncpg_dsn(empty_database_url))
    try:
        assert await current_revisions(conn) == head_revisions()
        assert await conn.fetchval("SELECT to_regclass('generation_events') IS NOT NULL")
    finally:
        await conn.close()


async def test_replay_prints_the_stored_events_as_json_lines(database_url: str, pool: Pool) -> None:
    generation_id = await finished_generation(pool)
    expected = await stored_json(pool, generation_id)
    assert len(expected) == 5

    result = await cli("replay", str(generation_id), database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    assert result.stdout.splitlines() == expected
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [event["seq"] for event in events] == [1, 2, 3, 4, 5]
    assert events[-1]["type"] == "generation.succeeded"


async def test_replay_after_n_skips_the_first_n_events(database_url: str, pool: Pool) -> None:
    generation_id = await finished_generation(pool)
    expected = await stored_json(pool, generation_id)

    result = await cli("replay", str(generation_id), "--after", "2", database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected[2:]
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [3, 4, 5]


async def test_replay_of_an_unknown_generation_fails_with_a_clear_message(
    database_url: str,
) -> None:
    unknown = uuid4()
    result = await cli("replay", str(unknown), database_url=database_url)
    assert result.returncode != 0
    assert result.stdout == ""
    assert f"generation {unknown} not found" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


async def test_export_then_import_moves_a_generation_to_another_database(
    database_url: str, other_database_url: str, pool: Pool, tmp_path: Path
) -> None:
    generation_id = await finished_generation(pool)
    expected = await stored_json(pool, generation_id)
    export_file = tmp_path / "export.ndjson"

    exported = await cli(
        "export", str(generation_id), "-o", str(export_file), database_url=database_url
    )
    imported = await cli("import", str(export_file), database_url=other_database_url)
    again = await cli("import", str(export_file), database_url=other_database_url)

    assert exported.returncode == 0, exported.stderr
    assert imported.returncode == 0, imported.stderr
    assert "imported 1 generation(s); skipped 0" in imported.stderr
    assert "imported 0 generation(s); skipped 1" in again.stderr
    other = await create_pool(other_database_url, min_size=1, max_size=1)
    try:
        assert await stored_json(other, generation_id) == expected
    finally:
        await other.close()


async def test_rebuild_check_reports_a_planted_difference_and_rebuild_repairs_it(
    database_url: str, pool: Pool
) -> None:
    generation_id = await finished_generation(pool)
    clean = await cli("rebuild", "--check", database_url=database_url)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE generations SET stage = 'nowhere' WHERE id = $1", generation_id)
    dirty = await cli("rebuild", "--check", database_url=database_url)
    repaired = await cli("rebuild", database_url=database_url)
    after = await cli("rebuild", "--check", database_url=database_url)

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert dirty.returncode == 1
    assert f"{generation_id} stage: row says 'nowhere', log says 'done'" in dirty.stdout
    assert repaired.returncode == 0
    assert "rebuilt 1 generation row(s)" in repaired.stdout
    assert after.returncode == 0


async def test_replay_at_the_recorded_pace_prints_the_same_lines(
    database_url: str, pool: Pool
) -> None:
    generation_id = await finished_generation(pool)
    expected = await stored_json(pool, generation_id)

    result = await cli(
        "replay", str(generation_id), "--pace", "recorded", "--speed", "50",
        database_url=database_url,
    )  # fmt: skip
    too_fast = await cli(
        "replay", str(generation_id), "--pace", "recorded", "--speed", "500",
        database_url=database_url,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected
    assert too_fast.returncode == 1
    assert "speed" in too_fast.stderr
