"""All SQL of the headline numbers ``GET /api/stats`` reads from the analytics views
(migration 0004; docs/analytics.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from service.store.db import Connection

# An owner's ($1) runs: counts by outcome and the median and p95 durations.
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
    percentile_cont(0.5) WITHIN GROUP (ORDER BY to_first_file_s) AS p50_to_first_file_s
FROM analytics_generation_runs
WHERE owner = $1
"""

# An owner's ($1) model tokens, prompt and output, summed over every completed phase.
SELECT_TOKENS = """
SELECT
    coalesce(sum(prompt_tokens), 0) AS prompt,
    coalesce(sum(output_tokens), 0) AS output
FROM analytics_token_usage
WHERE owner = $1
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


async def select_stats(conn: Connection, owner: str) -> StatsRows:
    runs = await conn.fetchrow(SELECT_RUNS, owner)
    tokens = await conn.fetchrow(SELECT_TOKENS, owner)
    recoveries = await conn.fetch(SELECT_RECOVERIES, owner)
    assert runs is not None  # an aggregate always returns a row
    assert tokens is not None
    return StatsRows(
        runs=dict(runs),
        tokens={"prompt": int(tokens["prompt"]), "output": int(tokens["output"])},
        recoveries={row["kind"]: int(row["occurrences"]) for row in recoveries},
    )
