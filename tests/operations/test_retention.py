"""Retention: redaction keeps each event's skeleton and drops only the bulk; a drop takes runs
whole and leaves a 410 behind; both are exact in a dry run and idempotent."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from service.errors import Conflict, Gone, NotFound
from service.events import EventType, NewEvent
from service.generation import runs
from service.ids import v7_at
from service.operations import audit
from service.operations.retention import Policy, apply
from service.operations.transfer import export_lines, import_lines
from service.store import event_log, generations, partitions
from service.store.db import Pool, create_pool
from tests.conftest import RunningApp
from tests.helpers import DONE, STARTED, append, events_of, finished_generation, new_generation

NOW = datetime.now(UTC)
FILE = 'print("hi \\u00e9 \\"quoted\\"")\n'  # finished_generation's one file
OUTPUT = "E   assert 1 == 2\n" * 20
CHECK: dict[str, Any] = {
    "step": "tests",
    "ok": False,
    "reason": "1 of 3 generated tests fail: test_total",
    "counts": {"passed": 2, "failed": 1, "errors": 0, "skipped": 0, "total": 3},
    "failing": ["test_total"],
    "duration_ms": 120,
    "output": OUTPUT,
    "round": 1,
}
VERIFICATION = {
    "level": "tests",
    "ok": False,
    "summary": CHECK["reason"],
    "rounds": 1,
    "repairs": 0,
    "checks": [CHECK],
}


async def verified_failure(pool: Pool, generation_id: UUID | None = None) -> UUID:
    """A run whose verification failed: a check's output in three places (check.completed,
    the verify phase's outcome, the terminal event), model text and a file."""
    generation_id = await finished_generation(pool, "alice", generation_id)
    async with pool.acquire() as conn:  # reopen it, as a retry would, to add a failed round
        await conn.execute(
            "UPDATE generations SET status = 'running', finished_at = NULL WHERE id = $1",
            generation_id,
        )
        await conn.execute(
            "DELETE FROM generation_events WHERE generation_id = $1 AND seq = 5", generation_id
        )
        await conn.execute("UPDATE generations SET last_seq = 4 WHERE id = $1", generation_id)
    await append(
        pool,
        generation_id,
        NewEvent(EventType.CHECK_COMPLETED, "verify", 0.9, "tests failed", dict(CHECK)),
        NewEvent(
            EventType.PHASE_COMPLETED,
            "verify",
            0.95,
            "verify: failed",
            {
                "phase": "verify",
                "files": 0,
                "attempts": 1,
                "prompt_tokens": 3,
                "output_tokens": 4,
                "duration_ms": 5,
                "provider": "offline",
                "model": None,
                "round": 1,
                "verification": VERIFICATION,
            },
        ),
        NewEvent(
            EventType.FAILED,
            "verify",
            0.95,
            "failed",
            {"error": "the generated code did not pass verification", "verification": VERIFICATION},
        ),
    )
    return generation_id


async def finished_ago(pool: Pool, generation_id: UUID, days: float) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE generations SET finished_at = $2 WHERE id = $1",
            generation_id,
            NOW - timedelta(days=days),
        )


def without_data(event: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in event.items() if key != "data"}


async def test_redaction_replaces_only_the_bulk_and_keeps_every_events_skeleton(
    pool: Pool,
) -> None:
    old = await verified_failure(pool)
    young = await verified_failure(pool)
    await finished_ago(pool, old, 40)
    await finished_ago(pool, young, 10)
    before = await events_of(pool, old)
    young_before = await events_of(pool, young)

    report = await apply(pool, Policy(redact_after_days=30), now=NOW)

    after = await events_of(pool, old)
    assert [without_data(e) for e in after] == [without_data(e) for e in before]  # chain too
    changed = {e["seq"]: e["data"] for e, b in zip(after, before, strict=True) if e != b}
    kinds = {after[seq - 1]["type"] for seq in changed}
    assert kinds == {"llm.delta", "check.completed", "phase.completed", "generation.failed"}
    for data in changed.values():
        assert data["redacted"]["at"] == NOW.isoformat()
        assert data["redacted"]["reason"] == "retention: the run finished more than 30 days ago"
    delta = next(e["data"] for e in after if e["type"] == "llm.delta")
    assert delta["text"] == ""
    assert delta["redacted"]["chars"] == len("line\nnext")
    failed = after[-1]["data"]
    assert failed["error"] == "the generated code did not pass verification"
    assert failed["verification"]["checks"][0] == {**CHECK, "output": ""}
    assert failed["redacted"]["chars"] == len(OUTPUT)
    assert failed["count"] == len(after)  # what the log added stays
    assert await events_of(pool, young) == young_before

    assert report.redacted_generations == 1
    assert report.redacted_events == 4
    assert report.redacted_files == 1
    assert report.chars_removed == len("line\nnext") + 3 * len(OUTPUT) + len(FILE)
    again = await apply(pool, Policy(redact_after_days=30), now=NOW)
    assert (again.redacted_generations, again.redacted_events) == (0, 0)


async def test_a_redacted_runs_chain_still_holds_its_redacted_links_taken_on_trust(
    pool: Pool,
) -> None:
    generation_id = await verified_failure(pool)
    await finished_ago(pool, generation_id, 40)
    await apply(pool, Policy(redact_after_days=30), now=NOW)

    checked = await audit.verify_chains(pool, [generation_id])
    assert checked.breaks == []
    assert checked.redacted == 4

    async with pool.acquire() as conn:  # an edit after redaction is still caught
        await conn.execute(
            "UPDATE generation_events SET message = 'forged' WHERE generation_id = $1 AND seq = 2",
            generation_id,
        )
    assert [b.kind for b in (await audit.verify_chains(pool, [generation_id])).breaks] == [
        "altered"
    ]


async def test_a_redacted_files_content_is_gone_and_its_run_cannot_be_retried(
    pool: Pool,
) -> None:
    generation_id = await verified_failure(pool)
    await finished_ago(pool, generation_id, 40)
    async with pool.acquire() as conn:
        before = await generations.select_files(conn, "alice", generation_id)
    await apply(pool, Policy(redact_after_days=30), now=NOW)

    async with pool.acquire() as conn:
        listed = await generations.select_files(conn, "alice", generation_id)
        with pytest.raises(Gone, match="retention redacted the run's files"):
            await generations.select_file(conn, "alice", generation_id, "app/main.py")
        with pytest.raises(Gone):
            await generations.select_file_contents(conn, "alice", generation_id)
    assert listed == before  # path, size, sha256, language
    with pytest.raises(Conflict, match="retention redacted its files"):
        await runs.retry_generation(pool, "alice", generation_id)


async def test_a_dry_run_counts_exactly_what_a_pass_does_and_changes_nothing(
    pool: Pool,
) -> None:
    ids = [await verified_failure(pool, uuid4()) for _ in range(3)]  # legacy: dropped alone
    for days, generation_id in zip((40, 40, 100), ids, strict=True):
        await finished_ago(pool, generation_id, days)
    policy = Policy(redact_after_days=30, drop_after_days=90)
    logs = [await events_of(pool, generation_id) for generation_id in ids]

    dry = await apply(pool, policy, now=NOW, dry_run=True, batch=1)

    assert [await events_of(pool, generation_id) for generation_id in ids] == logs
    async with pool.acquire() as conn:  # not even a lock or a rolled-back write on a row
        for table in ("generations", "generation_events", "generated_files"):
            touched = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE xmax <> '0'")
            assert touched == 0, table
    done = await apply(pool, policy, now=NOW, batch=1)
    assert (dry.redacted_generations, dry.dropped_generations) == (2, 1)
    assert {**asdict(dry), "dry_run": False} == asdict(done)


async def test_a_drop_takes_old_runs_whole_and_leaves_a_410_for_their_owner(
    pool: Pool,
) -> None:
    old = await finished_generation(pool, "alice", uuid4())  # the DEFAULT partition's
    young = await finished_generation(pool)
    await finished_ago(pool, old, 100)
    await finished_ago(pool, young, 10)

    report = await apply(pool, Policy(drop_after_days=90), now=NOW)

    assert (report.dropped_generations, report.dropped_events) == (1, 5)
    async with pool.acquire() as conn:
        left = await conn.fetchval(
            "SELECT count(*) FROM generation_events WHERE generation_id = $1", old
        )
        files = await conn.fetchval(
            "SELECT count(*) FROM generated_files WHERE generation_id = $1", old
        )
        with pytest.raises(Gone, match="finished more than 90 days before") as gone:
            await generations.select_generation(conn, "alice", old)
        with pytest.raises(NotFound):  # another owner learns nothing
            await generations.select_generation(conn, "bob", old)
        assert (await generations.select_generation(conn, "alice", young)).last_seq == 5
    assert (left, files) == (0, 0)
    assert gone.value.at == NOW
    assert len(await events_of(pool, young)) == 5


def test_a_policy_that_drops_before_it_redacts_is_refused() -> None:
    with pytest.raises(ValueError, match="dropped unredacted"):
        Policy(redact_after_days=30, drop_after_days=30)


async def test_over_http_a_dropped_run_is_410_and_a_redacted_file_is_410(
    pool: Pool, running: RunningApp, api_key: str
) -> None:
    dropped = await finished_generation(pool, "alice", uuid4())
    redacted = await finished_generation(pool)
    await finished_ago(pool, dropped, 100)
    await finished_ago(pool, redacted, 40)
    async with running.client(api_key) as client:
        issued = await client.post(f"/api/generations/{dropped}/stream-token")
    token = issued.json()["stream_token"]
    await apply(pool, Policy(redact_after_days=30, drop_after_days=90), now=NOW)

    async with running.client(api_key) as client:
        async with running.client() as anonymous:  # the token alone, as EventSource
            by_token = await anonymous.get(
                f"/api/generations/{dropped}/stream", params={"token": token}
            )
        assert by_token.status_code == 410, by_token.text
        for path in ("", "/events", "/stream", "/files", "/files/app/main.py", "/archive"):
            answer = await client.get(f"/api/generations/{dropped}{path}")
            assert answer.status_code == 410, (path, answer.text)
            body = answer.json()
            assert body["reason"].startswith("runs finished more than 90 days before")
            assert datetime.fromisoformat(body["at"]) == NOW
        file = await client.get(f"/api/generations/{redacted}/files/app/main.py")
        events = await client.get(f"/api/generations/{redacted}/events")
    assert file.status_code == 410
    assert "its path, size and sha256 remain" in file.json()["detail"]
    assert events.status_code == 200
    delta = next(e for e in events.json()["events"] if e["type"] == "llm.delta")
    assert delta["data"]["redacted"]["chars"] == len("line\nnext")


async def test_a_redacted_run_exported_and_imported_reads_back_the_same_and_its_chain_holds(
    pool: Pool, other_database_url: str
) -> None:
    generation_id = await verified_failure(pool)
    await finished_ago(pool, generation_id, 40)
    await apply(pool, Policy(redact_after_days=30), now=NOW)
    lines = [line async for line in export_lines(pool, ids=[generation_id])]

    other = await create_pool(other_database_url, min_size=1, max_size=2)
    try:
        result = await import_lines(other, lines, owner="alice")
        assert result.stored == [generation_id]
        assert await events_of(other, generation_id) == await events_of(pool, generation_id)
        checked = await audit.verify_chains(other, [generation_id])
        async with other.acquire() as conn:
            with pytest.raises(Gone):
                await generations.select_file(conn, "alice", generation_id, "app/main.py")
    finally:
        await other.close()
    assert (checked.breaks, checked.redacted) == ([], 4)


# -- whole periods --------------------------------------------------------------------------

JUNE = datetime(2026, 6, 10, tzinfo=UTC)


async def run_created(pool: Pool, at: datetime | UUID, finished_days_ago: float) -> UUID:
    """A finished run created at ``at`` (its id a v7 id of then, or this id), finished that
    long ago."""
    generation_id = await new_generation(
        pool, generation_id=at if isinstance(at, UUID) else v7_at(at)
    )
    await append(pool, generation_id, STARTED, DONE)
    await finished_ago(pool, generation_id, finished_days_ago)
    return generation_id


async def relations(pool: Pool, names: list[str]) -> list[str]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relname = ANY($1::text[]) ORDER BY 1", names
        )
    return [row[0] for row in rows]


async def test_a_period_whose_runs_are_all_past_the_age_is_dropped_whole(pool: Pool) -> None:
    async with pool.acquire() as conn:
        await partitions.ensure_partitions(conn, "month", 0, JUNE)
    june = [await run_created(pool, JUNE + timedelta(days=i), 150) for i in range(2)]
    legacy = await run_created(pool, uuid4(), 150)  # the DEFAULT partition's: dropped alone
    young = await run_created(pool, NOW, 1)
    names = ["generation_events_p20260601", "generated_files_p20260601"]
    assert await relations(pool, names) == sorted(names)

    dry = await apply(pool, Policy(drop_after_days=90), now=NOW, dry_run=True)
    assert await relations(pool, names) == sorted(names)
    report = await apply(pool, Policy(drop_after_days=90), now=NOW)

    assert asdict(report) == {**asdict(dry), "dry_run": False}
    assert report.dropped_partitions == names
    assert (report.dropped_generations, report.dropped_events) == (3, 9)
    assert all(type(n) is int for n in asdict(report).values() if not isinstance(n, list | bool))
    assert await relations(pool, names) == []
    async with pool.acquire() as conn:
        for generation_id in (*june, legacy):
            with pytest.raises(Gone):
                await generations.select_generation(conn, "alice", generation_id)
        # A period's drop says when, not who: any id of June is gone, whoever asks.
        with pytest.raises(Gone):
            await generations.select_generation(conn, "bob", v7_at(JUNE + timedelta(days=5)))
        with pytest.raises(NotFound):
            await generations.select_generation(conn, "bob", legacy)
        assert (await generations.select_generation(conn, "alice", young)).last_seq == 3
        check = await event_log.check_chains(conn)
    assert (check.generations, check.breaks) == (1, [])


async def test_a_dry_run_leaves_a_kept_periods_runs_to_redaction_as_the_pass_does(
    pool: Pool,
) -> None:
    async with pool.acquire() as conn:
        await partitions.ensure_partitions(conn, "month", 0, JUNE)
    await run_created(pool, JUNE, 150)  # past the drop age, but its period is kept
    await run_created(pool, JUNE + timedelta(days=1), 2)
    legacy = await run_created(pool, uuid4(), 150)  # dropped alone, so never redacted
    policy = Policy(redact_after_days=1, drop_after_days=90)

    dry = await apply(pool, policy, now=NOW, dry_run=True)
    done = await apply(pool, policy, now=NOW)

    assert asdict(dry) == {**asdict(done), "dry_run": True}
    assert (done.redacted_generations, done.dropped_generations) == (2, 1)
    async with pool.acquire() as conn:
        with pytest.raises(Gone):
            await generations.select_generation(conn, "alice", legacy)


async def test_a_period_a_young_run_keeps_stays_whole_until_its_last_run_is_old_enough(
    pool: Pool,
) -> None:
    async with pool.acquire() as conn:
        await partitions.ensure_partitions(conn, "month", 0, JUNE)
    old = await run_created(pool, JUNE, 150)
    retried = await run_created(pool, JUNE + timedelta(days=1), 2)  # finished again lately

    report = await apply(pool, Policy(drop_after_days=90), now=NOW)

    assert report.dropped_partitions == []
    assert report.kept == [
        "generation_events_p20260601, generated_files_p20260601: 1 run(s) finished too recently"
    ]
    assert report.dropped_generations == 0  # never row by row inside a period
    async with pool.acquire() as conn:
        for generation_id in (old, retried):
            assert (await generations.select_generation(conn, "alice", generation_id)).last_seq
    later = await apply(pool, Policy(drop_after_days=90), now=NOW + timedelta(days=89))
    assert later.dropped_partitions == ["generation_events_p20260601", "generated_files_p20260601"]
    assert later.dropped_generations == 2


async def test_a_period_is_kept_for_the_next_pass_while_a_long_reader_holds_the_log(
    pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(partitions, "LOCK_TIMEOUT", "SET LOCAL lock_timeout = '200ms'")
    async with pool.acquire() as conn:
        await partitions.ensure_partitions(conn, "month", 0, JUNE)
    old = await run_created(pool, JUNE, 150)
    async with pool.acquire() as reader, reader.transaction():
        await reader.fetchval("SELECT count(*) FROM generation_events")  # holds its lock

        busy = await apply(pool, Policy(drop_after_days=90), now=NOW)

    assert (busy.dropped_partitions, busy.dropped_generations) == ([], 0)
    assert busy.kept == [
        "generation_events_p20260601, generated_files_p20260601: the log stayed busy; "
        "the next pass tries"
    ]
    done = await apply(pool, Policy(drop_after_days=90), now=NOW)
    assert done.dropped_partitions == ["generation_events_p20260601", "generated_files_p20260601"]
    async with pool.acquire() as conn:
        with pytest.raises(Gone):
            await generations.select_generation(conn, "alice", old)


async def test_runs_created_while_periods_are_dropped_never_deadlock(pool: Pool) -> None:
    # A period's drop locks the log, then (dropping the partition's foreign key) generations;
    # a run's creation holds generations, then reads the log. The drop is the one to yield.
    months = [datetime(2025, month, 10, tzinfo=UTC) for month in range(1, 13)]
    async with pool.acquire() as conn:
        for month in months:
            await partitions.ensure_partitions(conn, "month", 0, month)
    for month in months:
        await run_created(pool, month, 400)
    stop = asyncio.Event()

    async def create_runs() -> int:
        count = 0
        while not stop.is_set():
            generation_id = await new_generation(pool)
            await append(pool, generation_id, STARTED)
            count += 1
        return count

    async def drop() -> list[str]:
        dropped: list[str] = []
        try:
            for _ in range(50):  # a busy log keeps a period for the next pass
                report = await apply(pool, Policy(drop_after_days=300), now=NOW)
                dropped += report.dropped_partitions
                if len(dropped) == 2 * len(months):
                    break
        finally:
            stop.set()
        return dropped

    runners = [asyncio.create_task(create_runs()) for _ in range(6)]
    dropped = await drop()
    counts = await asyncio.gather(*runners)
    assert sum(counts) > 0
    assert len(dropped) == 2 * len(months)
