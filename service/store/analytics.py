"""All SQL of the headline numbers ``GET /api/stats`` reads from the analytics views
(migrations 0004, 0008, 0011; docs/analytics.md).

Days are UTC calendar days, whatever the session's time zone: a run belongs to the day of its
``created_at`` in UTC, so that every server and client agree on where a day ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.store.db import Connection

# An owner's ($1) runs: counts by outcome, the median and p95 durations, and the median and
# p95 waits for the first event after queued and for the first file.
SELECT_RUNS = """
SELECT
    count(*) AS total,
    count(*) FILTER (WHERE outcome = 'succeeded') AS succeeded,
    count(*) FILTER (WHERE outcome = 'failed') AS failed,
    count(*) FILTER (WHERE outcome = 'cancelled') AS cancelled,
    count(*) FILTER (WHERE outcome IN ('queued', 'running')) AS in_progress,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_s) AS p50_duration_s,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_s) AS p95_duration_s,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY to_first_event_s) AS p50_to_first_event_s,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY to_first_event_s) AS p95_to_first_event_s,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY to_first_file_s) AS p50_to_first_file_s,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY to_first_file_s) AS p95_to_first_file_s
FROM analytics_generation_runs
WHERE owner = $1
"""

# An owner's ($1) runs per UTC day over the last $2 days (today included), oldest first: every
# day of the range, one without runs as zeros and null durations. The runs are grouped by day
# first and the days joined to them on equality, so the view is read once, through
# generations_owner_created_idx, not once per day. The bounds are timestamps without a time
# zone read AT TIME ZONE 'UTC': a timestamptz series would follow the session's zone.
SELECT_DAYS = """
WITH
    today AS (
        SELECT (now() AT TIME ZONE 'UTC')::date AS day
    ),
    by_day AS (
        SELECT
            (r.created_at AT TIME ZONE 'UTC')::date AS day,
            count(*) AS total,
            count(*) FILTER (WHERE r.outcome = 'succeeded') AS succeeded,
            count(*) FILTER (WHERE r.outcome = 'failed') AS failed,
            count(*) FILTER (WHERE r.outcome = 'cancelled') AS cancelled,
            count(*) FILTER (WHERE r.outcome IN ('queued', 'running')) AS in_progress,
            percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_s) AS p50_duration_s,
            percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_s) AS p95_duration_s
        FROM analytics_generation_runs AS r, today
        WHERE r.owner = $1
          AND r.created_at >= (today.day - ($2::int - 1))::timestamp AT TIME ZONE 'UTC'
        GROUP BY 1
    )
SELECT
    series.day::date AS day,
    coalesce(b.total, 0) AS total,
    coalesce(b.succeeded, 0) AS succeeded,
    coalesce(b.failed, 0) AS failed,
    coalesce(b.cancelled, 0) AS cancelled,
    coalesce(b.in_progress, 0) AS in_progress,
    b.p50_duration_s,
    b.p95_duration_s
FROM today,
    generate_series(
        (today.day - ($2::int - 1))::timestamp, today.day::timestamp, interval '1 day'
    ) AS series (day)
LEFT JOIN by_day AS b ON b.day = series.day::date
ORDER BY series.day
"""

# An owner's ($1) model tokens, prompt and output, summed over every completed phase.
SELECT_TOKENS = """
SELECT
    coalesce(sum(prompt_tokens), 0) AS prompt,
    coalesce(sum(output_tokens), 0) AS output
FROM analytics_token_usage
WHERE owner = $1
"""

# An owner's ($1) model tokens per provider and model (null: the provider names none), most
# tokens first; the same sums as SELECT_TOKENS, split.
SELECT_TOKENS_BY_MODEL = """
SELECT
    provider,
    model,
    phases,
    coalesce(prompt_tokens, 0) AS prompt,
    coalesce(output_tokens, 0) AS output
FROM analytics_token_usage
WHERE owner = $1
ORDER BY coalesce(prompt_tokens, 0) + coalesce(output_tokens, 0) DESC, provider, model
"""

# An owner's ($1) recovery events counted by kind (resumed, failed, phase_retry, repair,
# retried).
SELECT_RECOVERIES = """
SELECT
    kind,
    sum(occurrences) AS occurrences
FROM analytics_recoveries
WHERE owner = $1
GROUP BY kind
"""


@dataclass(frozen=True, slots=True)
class StatsRows:
    """What the analytics views say of one owner; ``api/stats.py`` shapes it into the
    response (``schemas.Stats``)."""

    runs: dict[str, float | int | None]
    tokens: dict[str, int]
    recoveries: dict[str, int] = field(default_factory=dict)
    days: list[dict[str, Any]] = field(default_factory=list)
    tokens_by_model: list[dict[str, Any]] = field(default_factory=list)


async def select_stats(conn: Connection, owner: str, days: int = 30) -> StatsRows:
    """``owner``'s numbers: all time, and per UTC day over the last ``days`` days."""
    # One snapshot for the five reads: a run that ends between two of them would otherwise be
    # counted in progress by one and finished by another, and the days would not add up to
    # the totals, nor the models' tokens to the tokens.
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        runs = await conn.fetchrow(SELECT_RUNS, owner)
        per_day = await conn.fetch(SELECT_DAYS, owner, days)
        tokens = await conn.fetchrow(SELECT_TOKENS, owner)
        by_model = await conn.fetch(SELECT_TOKENS_BY_MODEL, owner)
        recoveries = await conn.fetch(SELECT_RECOVERIES, owner)
    assert runs is not None  # an aggregate always returns a row
    assert tokens is not None
    return StatsRows(
        runs=dict(runs),
        tokens={"prompt": int(tokens["prompt"]), "output": int(tokens["output"])},
        recoveries={row["kind"]: int(row["occurrences"]) for row in recoveries},
        days=[dict(row) for row in per_day],
        tokens_by_model=[
            {**dict(row), "prompt": int(row["prompt"]), "output": int(row["output"])}
            for row in by_model
        ],
    )
