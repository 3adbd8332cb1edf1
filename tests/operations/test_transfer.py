from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from uuid import UUID

import pytest

from service.events import EventType, NewEvent
from service.generation import runs
from service.operations import rebuild
from service.operations.transfer import KEEP_OWNERS, Action, Imported, export_lines, import_lines
from service.store import event_log, generations
from service.store.db import Pool, create_pool
from service.store.reads import Reads
from tests.conftest import AppFactory
from tests.helpers import (
    DONE,
    SPEC,
    STARTED,
    append,
    exported,
    finished_generation,
    ndjson,
    new_generation,
    stored_json,
)
from tests.replica import Standby, answered, more


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

    result = await import_lines(other_pool, lines, owner=KEEP_OWNERS)

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
    await import_lines(other_pool, lines, owner="alice")
    before = await snapshot(other_pool, generation_id)

    again = await import_lines(other_pool, lines, owner="alice")

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


# --- an export is untrusted input (issue 12, finding 4) ---------------------------------------
#
# An export of finished_generation(): line 1 the generation (last_seq 5), lines 2-6 its events
# (seq 1 queued, 2 started, 3 llm.delta, 4 file.saved of app/main.py, 5 succeeded), line 7 the
# file. Each test edits it as an attacker or a broken backup would.

GENERATION, DELTA, FILE_SAVED, SUCCEEDED, FILE = 0, 3, 4, 5, 6  # indexes of its records


async def load(pool: Pool, lines: Sequence[str | bytes], owner: str = "carol") -> Imported:
    return await import_lines(pool, lines, owner=owner)


async def rows_of(pool: Pool, generation_id: UUID | str) -> tuple[int, int, int]:
    """How many generation, event and file rows a generation has."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM generations WHERE id = $1),"
            " (SELECT count(*) FROM generation_events WHERE generation_id = $1),"
            " (SELECT count(*) FROM generated_files WHERE generation_id = $1)",
            UUID(str(generation_id)),
        )
    assert row is not None
    return (row[0], row[1], row[2])


def refusal(result: Imported) -> tuple[int, str]:
    """The one refusal of an import: its line and reason."""
    assert result.stored == [], result
    (refused,) = result.refused
    assert refused.action is Action.REFUSED
    return refused.line, refused.reason


async def test_an_event_type_outside_the_vocabulary_is_refused_and_never_reaches_a_stream(
    pool: Pool, other_pool: Pool
) -> None:
    records = await exported(pool, await finished_generation(pool))
    generation_id = records[GENERATION]["generation"]["id"]
    # Written verbatim into the stream's `event:` line, this forged three frames.
    records[DELTA]["event"]["type"] = (
        'llm.delta\nid: 999\nevent: generation.succeeded\ndata: {"injected":true}'
    )

    result = await load(other_pool, ndjson(records))

    line, reason = refusal(result)
    assert line == DELTA + 1
    assert "event seq 3's type: 'llm.delta\\nid: 999" in reason
    assert "is not an event type" in reason
    assert await rows_of(other_pool, generation_id) == (0, 0, 0)


async def test_an_event_edited_in_the_export_breaks_its_chain_and_is_refused(
    pool: Pool, other_pool: Pool
) -> None:
    records = await exported(pool, await finished_generation(pool))
    generation_id = records[GENERATION]["generation"]["id"]
    records[DELTA]["event"]["message"] = "forged"

    result = await load(other_pool, ndjson(records))

    _, reason = refusal(result)
    assert "its chain breaks at seq 3 (altered)" in reason
    assert await rows_of(other_pool, generation_id) == (0, 0, 0)


async def test_a_chain_that_is_not_a_hash_is_refused_in_words(pool: Pool, other_pool: Pool) -> None:
    records = await exported(pool, await finished_generation(pool))
    generation_id = records[GENERATION]["generation"]["id"]
    records[DELTA]["event"]["chain"] = "not a hash"

    result = await load(other_pool, ndjson(records))

    line, reason = refusal(result)
    assert line == DELTA + 1
    assert "event seq 3's chain: 'not a hash' is not a chain hash" in reason
    assert await rows_of(other_pool, generation_id) == (0, 0, 0)


async def test_an_export_made_before_chain_hashes_gets_its_chain_on_import(
    pool: Pool, other_pool: Pool
) -> None:
    original = await finished_generation(pool)
    records = await exported(pool, original)
    for record in records[GENERATION + 1 : SUCCEEDED + 1]:
        del record["event"]["chain"]

    result = await load(other_pool, ndjson(records))

    assert result.refused == []
    async with other_pool.acquire() as there:
        assert (await event_log.check_chains(there, [original])).breaks == []
    assert await stored_json(other_pool, original) == await stored_json(pool, original)


@pytest.mark.parametrize(
    "path", ["../../../../etc/x", "/etc/cron.d/evil", "..\\..\\evil.bat", ".env"]
)
@pytest.mark.parametrize("where", ["the file", "the file and its event"])
async def test_a_file_path_no_generation_could_store_is_refused(
    pool: Pool, other_pool: Pool, path: str, where: str
) -> None:
    records = await exported(pool, await finished_generation(pool))
    records[FILE]["file"]["path"] = path
    if where == "the file and its event":
        records[FILE_SAVED]["event"]["payload"]["path"] = path

    result = await load(other_pool, ndjson(records))

    line, reason = refusal(result)
    assert line == (FILE + 1 if where == "the file" else FILE_SAVED + 1)
    assert f"file path {path!r}" in reason
    assert await rows_of(other_pool, records[GENERATION]["generation"]["id"]) == (0, 0, 0)


async def test_the_owner_is_the_one_the_import_names_not_the_exports(
    pool: Pool, other_pool: Pool, database_url: str
) -> None:
    first, second = await finished_generation(pool), await finished_generation(pool)
    records = await exported(pool, first, second)
    for record in records:
        if "generation" in record:
            record["generation"]["owner"] = "victim"  # an export may say anything

    named = await load(other_pool, ndjson(records[:7]), owner="carol")
    kept = await import_lines(other_pool, ndjson(records[7:]), owner=KEEP_OWNERS)

    assert (named.stored, kept.stored) == ([first], [second])
    async with other_pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, owner FROM generations")
    owners = {row["id"]: row["owner"] for row in rows}
    assert owners == {first: "carol", second: "victim"}


def _gap(records: list[dict[str, Any]]) -> None:
    del records[DELTA]


def _after_terminal(records: list[dict[str, Any]]) -> None:
    records.insert(SUCCEEDED + 1, {"event": dict(records[DELTA]["event"], seq=6)})
    records[GENERATION]["generation"]["last_seq"] = 6


def _second_terminal(records: list[dict[str, Any]]) -> None:
    failed = dict(records[SUCCEEDED]["event"], seq=6, type="generation.failed", status="failed")
    records.insert(SUCCEEDED + 1, {"event": failed})


def _retried_after_success(records: list[dict[str, Any]]) -> None:
    retried = dict(records[SUCCEEDED]["event"], seq=6, type="generation.retried", status="queued")
    records.insert(SUCCEEDED + 1, {"event": retried})


def _retried_with_a_text_attempt(records: list[dict[str, Any]]) -> None:
    event = records[SUCCEEDED]["event"]
    failed = dict(event, type="generation.failed", status="failed")
    records[SUCCEEDED] = {"event": failed}
    retried = dict(event, seq=6, type="generation.retried", status="queued")
    retried["payload"] = {"after": "failed", "completed_phases": [], "attempt": "9999999999"}
    records.insert(SUCCEEDED + 1, {"event": retried})


def _running_but_ended(records: list[dict[str, Any]]) -> None:
    records[GENERATION]["generation"].update(status="running", finished_at=None)


def _last_seq_lags(records: list[dict[str, Any]]) -> None:
    records[GENERATION]["generation"]["last_seq"] = 3


def _finished_without_terminal(records: list[dict[str, Any]]) -> None:
    del records[SUCCEEDED]


@pytest.mark.parametrize(
    ("defect", "line", "says"),
    [
        (_gap, DELTA + 1, "event seq 4 where seq 3 was expected"),
        (_after_terminal, SUCCEEDED + 2, "is an event after the terminal event at seq 5"),
        (_second_terminal, SUCCEEDED + 2, "is a second terminal event after the terminal"),
        (_retried_after_success, SUCCEEDED + 2, "must follow a generation.failed or"),
        (_retried_with_a_text_attempt, SUCCEEDED + 2, "data.attempt must be an integer"),
        # Claimed again, it got a second terminal event.
        (_running_but_ended, 1, "status is 'running' but its log says 'succeeded'"),
        # Every append failed on the seq's primary key; the run was claimed every 30 s for ever.
        (_last_seq_lags, 1, "last_seq is 3 but its log says 5"),
        (_finished_without_terminal, 1, "status is 'succeeded' but its log says 'running'"),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else "",
)
async def test_a_log_genstream_could_not_have_written_is_refused_whole(
    pool: Pool,
    other_pool: Pool,
    defect: Callable[[list[dict[str, Any]]], None],
    line: int,
    says: str,
) -> None:
    records = await exported(pool, await finished_generation(pool))
    defect(records)

    result = await load(other_pool, ndjson(records))

    at, reason = refusal(result)
    assert at == line
    assert says in reason
    assert await rows_of(other_pool, records[GENERATION]["generation"]["id"]) == (0, 0, 0)


async def test_a_retried_run_moves_with_both_attempts_and_its_chain(
    pool: Pool, other_pool: Pool
) -> None:
    generation_id = await new_generation(pool)
    await append(pool, generation_id, STARTED)
    await append(pool, generation_id, NewEvent(EventType.FAILED, "core", 0.2, "x", {"error": "e"}))
    await runs.retry_generation(pool, "alice", generation_id)
    await append(pool, generation_id, STARTED, DONE)
    records = await exported(pool, generation_id)

    result = await load(other_pool, ndjson(records))

    assert result.stored == [generation_id]
    moved = await exported(other_pool, generation_id)
    assert [r for r in moved if "event" in r] == [r for r in records if "event" in r]
    async with other_pool.acquire() as conn:
        assert (await event_log.check_chains(conn, [generation_id])).breaks == []


async def test_a_run_exported_while_running_arrives_unclaimed_for_a_worker_here(
    pool: Pool, other_pool: Pool
) -> None:
    generation_id = await new_generation(pool)
    await append(pool, generation_id, STARTED)
    async with pool.acquire() as conn:
        assert await generations.claim_next(conn, "worker-there", 30.0) is not None
    records = await exported(pool, generation_id)

    result = await load(other_pool, ndjson(records))

    assert result.stored == [generation_id]
    async with other_pool.acquire() as conn:
        claimed = await generations.claim_next(conn, "worker-here", 30.0)
    assert claimed is not None
    assert (claimed.id, claimed.status, claimed.attempt) == (generation_id, "running", 2)


async def test_a_bad_line_halfway_refuses_its_generation_only_and_says_so(
    pool: Pool, other_pool: Pool
) -> None:
    ids = [await finished_generation(pool) for _ in range(3)]
    lines = ndjson(await exported(pool, *ids))
    lines[7 + DELTA] = '{"event": {"generation_id": "' + str(ids[1])  # cut short

    result = await load(other_pool, lines)

    assert result.stored == [ids[0], ids[2]]
    (refused,) = result.refused
    assert (refused.generation_id, refused.line) == (ids[1], 7 + DELTA + 1)
    assert refused.reason.startswith("not an export line: not JSON")
    assert await rows_of(other_pool, ids[1]) == (0, 0, 0)


@pytest.mark.parametrize(
    "line",
    [
        "[1]",
        '"generation"',
        "null",
        "42",
        '{"generation": []}',
        '{"generation": {}}',
        '{"generation": {"id": "x"}}',
        '{"event": 5}',
        '{"event": {"generation_id": "x"}}',
        '{"file": {}}',
        '{"generation": {}, "event": {}}',
        '{"rows": {}}',
        '{"generation": {"id": "\\u0000"}}',
        '{"generation": {"id": "\\ud800"}}',
        '{"generation": {"progress": NaN}}',
        '{"generation": {"progress": 1e999}}',
        "[" * 100_000,
        b"\xff\xfe not UTF-8",
    ],
)
async def test_a_line_that_is_not_a_row_is_refused_in_words_not_a_traceback(
    pool: Pool, other_pool: Pool, line: str | bytes
) -> None:
    good = await finished_generation(pool)

    result = await load(other_pool, [line, *ndjson(await exported(pool, good))])

    assert result.stored == [good]
    (refused,) = result.refused
    assert (refused.generation_id, refused.line) == (None, 1)
    assert "Traceback" not in refused.reason
    async with other_pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM generations") == 1


async def test_a_dry_run_reports_what_an_import_would_do_and_writes_nothing(
    pool: Pool, other_pool: Pool
) -> None:
    good, bad = await finished_generation(pool), await finished_generation(pool)
    records = await exported(pool, good, bad)
    records[7 + GENERATION]["generation"]["last_seq"] = 4

    dry = await import_lines(other_pool, ndjson(records), owner="carol", dry_run=True)
    empty = await rows_of(other_pool, good)
    await load(other_pool, ndjson(records))
    again = await import_lines(other_pool, ndjson(records), owner="carol", dry_run=True)

    assert (dry.stored, dry.skipped, [r.generation_id for r in dry.refused]) == ([good], [], [bad])
    assert empty == (0, 0, 0)
    assert (again.stored, again.skipped) == ([], [good])


async def test_a_generation_twice_in_one_export_is_refused_the_second_time(
    pool: Pool, other_pool: Pool
) -> None:
    generation_id = await finished_generation(pool)
    lines = ndjson(await exported(pool, generation_id))

    result = await load(other_pool, lines + lines)

    assert result.stored == [generation_id]
    (refused,) = result.refused
    assert refused.line == 8
    assert "appears twice (first on line 1)" in refused.reason


async def test_every_kind_of_imported_run_is_one_rebuild_check_finds_sound(
    pool: Pool, other_pool: Pool
) -> None:
    succeeded = await finished_generation(pool)
    queued = await new_generation(pool)
    running = await new_generation(pool)
    await append(pool, running, STARTED)
    failed = await new_generation(pool)
    await append(pool, failed, STARTED)
    await append(pool, failed, NewEvent(EventType.FAILED, "core", 0.3, "Failed", {"error": "x"}))
    cancelled = await new_generation(pool)
    await append(pool, cancelled, NewEvent(EventType.CANCELLED, "queued", 0.0, "Cancelled"))
    resumed = await new_generation(pool)
    await append(pool, resumed, STARTED, NewEvent(EventType.RESUMED, "core", 0.1, "Resumed"))
    await append(pool, resumed, DONE)
    ids = [succeeded, queued, running, failed, cancelled, resumed]
    assert await rebuild.check(pool) == rebuild.Findings([], [], [])

    result = await load(other_pool, ndjson(await exported(pool)))

    assert sorted(result.stored) == sorted(ids)
    assert result.refused == []
    assert await rebuild.check(other_pool) == rebuild.Findings([], [], [])


async def test_an_export_off_a_paused_standby_has_everything_the_primary_had(
    pool: Pool, replica_pool: Pool, standby: Standby
) -> None:
    await standby.caught_up()
    reads = Reads(pool, replica_pool, wait_s=0.05)
    async with standby.paused():
        generation_id = await finished_generation(pool)
        before = answered()
        paused = [line async for line in export_lines(reads, [generation_id])]
        fell_back = more(before)
    await standby.caught_up()
    # A new reader: the first one is behind for BEHIND_S after its fallback and would not wait
    # for WAL the primary writes on its own after caught_up (bgwriter's running-xacts record).
    before = answered()
    resumed = [
        line async for line in export_lines(Reads(pool, replica_pool, wait_s=5.0), [generation_id])
    ]

    assert paused == resumed == [line async for line in export_lines(pool, [generation_id])]
    assert len(paused) == 1 + 5 + 1  # the generation, its events, its file
    assert fell_back == {"primary": 1}
    assert more(before) in ({"replica": 1}, {"replica_waited": 1})
