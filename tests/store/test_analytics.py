"""The analytics views (migration 0004) on a small log with hand-computed answers, and their
plans on a seeded database: per-generation reads never scan the whole events table."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from service.store import analytics
from service.store.db import Pool

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


async def insert_log(
    pool: Pool,
    status: str,
    created_at: datetime,
    events: list[tuple[float, str, str, dict[str, Any]]],
) -> UUID:
    """A generation and its events with given times (seconds after ``created_at``)."""
    generation_id = uuid4()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO generations (id, owner, status, stage, message, spec, provider,"
            " last_seq, created_at) VALUES ($1, 'alice', $2, 'x', 'x', '{}', 'offline', $3, $4)",
            generation_id, status, len(events), created_at,
        )  # fmt: skip
        for seq, (after_s, kind, stage, payload) in enumerate(events, start=1):
            await conn.execute(
                "INSERT INTO generation_events (generation_id, seq, type, status, stage, progress,"
                " message, payload, created_at) VALUES ($1, $2, $3, 'running', $4, 0, '', $5, $6)",
                generation_id, seq, kind, stage, json.dumps(payload),
                created_at + timedelta(seconds=after_s),
            )  # fmt: skip
    return generation_id


@pytest.fixture
async def known_log(pool: Pool) -> tuple[UUID, UUID]:
    succeeded = await insert_log(pool, "succeeded", T0, [
        (0, "generation.queued", "queued", {}),
        (1, "generation.started", "starting", {}),
        (2, "phase.started", "core", {"attempt": 1}),
        (4, "file.saved", "core", {"path": "app/main.py"}),
        (5, "phase.completed", "core", {"prompt_tokens": 100, "output_tokens": 50, "model": "m1"}),
        (5, "phase.started", "models", {"attempt": 1}),
        (6, "phase.started", "models", {"attempt": 2, "reason": "bad output"}),
        (9, "phase.completed", "models", {"prompt_tokens": 10, "output_tokens": 5, "model": "m1"}),
        (10, "generation.succeeded", "done", {}),
    ])  # fmt: skip
    failed = await insert_log(pool, "failed", T0 + timedelta(hours=1), [
        (0, "generation.queued", "queued", {}),
        (2, "generation.started", "starting", {}),
        (3, "generation.resumed", "starting", {}),
        (4, "generation.failed", "starting", {"error": "provider down"}),
    ])  # fmt: skip
    return succeeded, failed


async def rows(pool: Pool, query: str, *args: Any) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [dict(row) for row in await conn.fetch(query, *args)]


async def test_phase_durations(pool: Pool, known_log: tuple[UUID, UUID]) -> None:
    succeeded, _ = known_log
    found = await rows(
        pool,
        "SELECT phase, started_at, completed_at, duration_s::float8 AS duration_s, starts, round"
        " FROM analytics_phase_durations WHERE generation_id = $1 ORDER BY started_at",
        succeeded,
    )
    assert found == [
        {"phase": "core", "started_at": T0 + timedelta(seconds=2),
         "completed_at": T0 + timedelta(seconds=5), "duration_s": 3.0, "starts": 1,
         "round": None},
        {"phase": "models", "started_at": T0 + timedelta(seconds=5),
         "completed_at": T0 + timedelta(seconds=9), "duration_s": 4.0, "starts": 2,
         "round": None},
    ]  # fmt: skip


async def test_generation_runs_time_to_first_event_and_file(
    pool: Pool, known_log: tuple[UUID, UUID]
) -> None:
    succeeded, failed = known_log
    found = await rows(
        pool,
        "SELECT generation_id, outcome, duration_s::float8 AS duration_s,"
        " to_first_event_s::float8 AS to_first_event_s, to_first_file_s::float8 AS to_first_file_s"
        " FROM analytics_generation_runs ORDER BY created_at",
    )
    assert found == [
        {"generation_id": succeeded, "outcome": "succeeded", "duration_s": 10.0,
         "to_first_event_s": 1.0, "to_first_file_s": 4.0},
        {"generation_id": failed, "outcome": "failed", "duration_s": 4.0,
         "to_first_event_s": 2.0, "to_first_file_s": None},
    ]  # fmt: skip


async def test_outcomes_per_day_with_duration_percentiles(
    pool: Pool, known_log: tuple[UUID, UUID]
) -> None:
    found = await rows(
        pool,
        "SELECT owner, day::date AS day, outcome, generations, p50_duration_s, p95_duration_s"
        " FROM analytics_outcomes_daily ORDER BY outcome",
    )
    assert found == [
        {"owner": "alice", "day": date(2026, 1, 1), "outcome": "failed", "generations": 1,
         "p50_duration_s": 4.0, "p95_duration_s": 4.0},
        {"owner": "alice", "day": date(2026, 1, 1), "outcome": "succeeded", "generations": 1,
         "p50_duration_s": 10.0, "p95_duration_s": 10.0},
    ]  # fmt: skip


async def test_token_usage_per_provider_and_model(pool: Pool, known_log: tuple[UUID, UUID]) -> None:
    found = await rows(pool, "SELECT * FROM analytics_token_usage")
    assert found == [
        {"owner": "alice", "provider": "offline", "model": "m1", "phases": 2,
         "prompt_tokens": 110, "output_tokens": 55},
    ]  # fmt: skip


async def test_retries_resumes_and_failures_by_reason(
    pool: Pool, known_log: tuple[UUID, UUID]
) -> None:
    found = await rows(pool, "SELECT * FROM analytics_recoveries ORDER BY kind")
    assert found == [
        {"owner": "alice", "kind": "failed", "reason": "provider down", "occurrences": 1,
         "generations": 1},
        {"owner": "alice", "kind": "phase_retry", "reason": "bad output", "occurrences": 1,
         "generations": 1},
        {"owner": "alice", "kind": "resumed", "reason": "", "occurrences": 1, "generations": 1},
    ]  # fmt: skip


def verification(ok: bool, round_: int, checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"phase": "verify", "round": round_, "duration_ms": 1500, "prompt_tokens": 0,
            "output_tokens": 0, "verification": {"level": "tests", "ok": ok, "summary": "s",
                                                  "rounds": round_, "checks": checks}}  # fmt: skip


def check(step: str, ok: bool, passed: int = 0, failed: int = 0) -> dict[str, Any]:
    return {"step": step, "ok": ok, "counts": {"passed": passed, "failed": failed, "errors": 0}}


@pytest.fixture
async def repaired_log(pool: Pool) -> UUID:
    """A run whose first verify round failed its tests, repaired once, then passed."""
    return await insert_log(pool, "succeeded", T0, [
        (0, "generation.queued", "queued", {}),
        (1, "generation.started", "starting", {}),
        (2, "phase.started", "verify", {"attempt": 1, "round": 1}),
        (4, "phase.completed", "verify", verification(False, 1, [
            check("compile", True, 9), check("import", True, 1), check("tests", False, 28, 3),
        ])),
        (4, "phase.started", "repair", {"attempt": 1, "round": 1}),
        (7, "phase.completed", "repair", {"round": 1, "prompt_tokens": 700, "output_tokens": 90}),
        (7, "phase.started", "verify", {"attempt": 1, "round": 2}),
        (8, "phase.completed", "verify", verification(True, 2, [
            check("compile", True, 9), check("import", True, 1), check("tests", True, 31),
        ])),
        (9, "generation.succeeded", "done", {}),
    ])  # fmt: skip


async def test_verify_and_repair_rounds_have_a_duration_each(
    pool: Pool, repaired_log: UUID
) -> None:
    found = await rows(
        pool,
        "SELECT phase, round, duration_s::float8 AS duration_s FROM analytics_phase_durations"
        " WHERE generation_id = $1 ORDER BY started_at",
        repaired_log,
    )
    assert found == [
        {"phase": "verify", "round": 1, "duration_s": 2.0},
        {"phase": "repair", "round": 1, "duration_s": 3.0},
        {"phase": "verify", "round": 2, "duration_s": 1.0},
    ]


async def test_each_verify_round_with_its_outcome_and_test_counts(
    pool: Pool, repaired_log: UUID
) -> None:
    found = await rows(
        pool,
        "SELECT round, level, ok, failed_step, tests_passed, tests_failed, duration_s"
        " FROM analytics_verifications WHERE generation_id = $1 ORDER BY round",
        repaired_log,
    )
    assert found == [
        {"round": 1, "level": "tests", "ok": False, "failed_step": "tests", "tests_passed": 28,
         "tests_failed": 3, "duration_s": 1.5},
        {"round": 2, "level": "tests", "ok": True, "failed_step": None, "tests_passed": 31,
         "tests_failed": 0, "duration_s": 1.5},
    ]  # fmt: skip
    recoveries = await rows(pool, "SELECT kind, occurrences FROM analytics_recoveries")
    assert recoveries == [{"kind": "repair", "occurrences": 1}]
    tokens = await rows(pool, "SELECT phases, prompt_tokens FROM analytics_token_usage")
    assert tokens == [{"phases": 3, "prompt_tokens": 700}]


async def test_events_per_generation_by_type(pool: Pool, known_log: tuple[UUID, UUID]) -> None:
    succeeded, _ = known_log
    found = await rows(
        pool,
        "SELECT type, events FROM analytics_event_counts WHERE generation_id = $1 ORDER BY type",
        succeeded,
    )
    assert found == [
        {"type": "file.saved", "events": 1},
        {"type": "generation.queued", "events": 1},
        {"type": "generation.started", "events": 1},
        {"type": "generation.succeeded", "events": 1},
        {"type": "phase.completed", "events": 2},
        {"type": "phase.started", "events": 3},
    ]


# --- select_stats: what GET /api/stats reads -------------------------------------------------


def run_of(duration_s: float, end: str) -> list[tuple[float, str, str, dict[str, Any]]]:
    return [
        (0, "generation.queued", "queued", {}),
        (1, "generation.started", "starting", {}),
        (duration_s, end, "done", {}),
    ]


async def test_stats_per_utc_day_fill_empty_days_and_ignore_the_sessions_time_zone(
    pool: Pool,
) -> None:
    async with pool.acquire() as conn:
        today: date = await conn.fetchval("SELECT (now() AT TIME ZONE 'UTC')::date")
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    two_days_ago = midnight - timedelta(days=2)
    # Late on a UTC day: in the session's zone below (UTC+14) it is the next day already.
    await insert_log(pool, "succeeded", two_days_ago + timedelta(hours=23, minutes=30),
                     run_of(10, "generation.succeeded"))  # fmt: skip
    await insert_log(pool, "failed", two_days_ago + timedelta(minutes=10),
                     run_of(4, "generation.failed"))  # fmt: skip
    await insert_log(pool, "cancelled", midnight - timedelta(days=7, hours=-12),
                     run_of(2, "generation.cancelled"))  # fmt: skip
    await insert_log(pool, "running", datetime.now(UTC), run_of(1, "generation.resumed")[:2])

    async with pool.acquire() as conn:
        await conn.execute("SET TimeZone = 'Pacific/Kiritimati'")
        week = await analytics.select_stats(conn, "alice", days=7)
        eight = await analytics.select_stats(conn, "alice", days=8)
        nobody = await analytics.select_stats(conn, "bob", days=2)
        await conn.execute("RESET TimeZone")

    def day(n: int, **counts: Any) -> dict[str, Any]:
        """The entry ``n`` days before today: zeros and null durations unless ``counts``."""
        zero = {"total": 0, "succeeded": 0, "failed": 0, "cancelled": 0, "in_progress": 0,
                "p50_duration_s": None, "p95_duration_s": None}  # fmt: skip
        return {"day": today - timedelta(days=n), **zero, **counts}

    assert week.days == [
        day(6), day(5), day(4), day(3),
        day(2, total=2, succeeded=1, failed=1, p50_duration_s=7.0,
            p95_duration_s=pytest.approx(4 + 0.95 * 6)),
        day(1),
        day(0, total=1, in_progress=1),
    ]  # fmt: skip
    assert eight.days[0] == day(7, total=1, cancelled=1, p50_duration_s=2.0, p95_duration_s=2.0)
    assert eight.days[1:] == week.days
    assert week.runs["total"] == 4  # all time: the run of a week ago too
    assert nobody.days == [day(1), day(0)]


async def test_stats_tokens_per_model_most_first_adding_up_to_the_tokens(pool: Pool) -> None:
    def phase(prompt: int, output: int, **model: str) -> tuple[float, str, str, dict[str, Any]]:
        return (1, "phase.completed", "core",
                {"prompt_tokens": prompt, "output_tokens": output, **model})  # fmt: skip

    await insert_log(pool, "succeeded", T0, [
        (0, "generation.queued", "queued", {}),
        phase(10, 5, model="small"),
        phase(100, 100),
        phase(600, 400, model="big"),
        phase(400, 100, model="big"),
    ])  # fmt: skip
    async with pool.acquire() as conn:
        found = await analytics.select_stats(conn, "alice")

    assert found.tokens_by_model == [
        {"provider": "offline", "model": "big", "phases": 2, "prompt": 1000, "output": 500},
        {"provider": "offline", "model": None, "phases": 1, "prompt": 100, "output": 100},
        {"provider": "offline", "model": "small", "phases": 1, "prompt": 10, "output": 5},
    ]
    assert found.tokens == {"prompt": 1110, "output": 605}
    assert len(found.days) == 30


# --- plans on a seeded database ----------------------------------------------------------------


def scans(plan: Any) -> list[tuple[str, str]]:
    """Every (node type, relation) in an EXPLAIN (FORMAT JSON) plan."""
    found: list[tuple[str, str]] = []
    nodes = [plan[0]["Plan"]]
    while nodes:
        node = nodes.pop()
        found.append((node["Node Type"], node.get("Relation Name", "")))
        nodes += node.get("Plans", [])
    return found


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM analytics_phase_durations WHERE generation_id = $1",
        "SELECT * FROM analytics_event_counts WHERE generation_id = $1",
        "SELECT * FROM analytics_generation_runs WHERE generation_id = $1",
    ],
)
async def test_per_generation_reads_use_the_primary_key_not_a_scan_of_every_event(
    pool: Pool, query: str
) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            """
            INSERT INTO generations (id, owner, status, stage, message, spec, provider, last_seq)
            SELECT md5(n::text)::uuid, 'seed', 'succeeded', 'done', '', '{}', 'offline', 40
            FROM generate_series(1, 500) AS n;
            INSERT INTO generation_events
                (generation_id, seq, type, status, stage, progress, message, payload)
            SELECT md5(n::text)::uuid, s,
                (ARRAY['phase.started', 'llm.delta', 'file.saved', 'phase.completed'])[s % 4 + 1],
                'running', 'core', 0.5, '', '{}'
            FROM generate_series(1, 500) AS n, generate_series(1, 40) AS s;
            ANALYZE generations;
            ANALYZE generation_events;
            """
        )
        one = await conn.fetchval("SELECT md5('7')::uuid")
        plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", one))
    found = scans(plan)
    # The seeded runs' ids are v4: their rows are in the DEFAULT partition (migration 0012).
    # An empty period partition may show a Seq Scan (free on no pages; pruned at run time).
    assert ("Seq Scan", "generation_events_default") not in found, found
    assert any(relation == "generation_events_default" for _, relation in found), found
