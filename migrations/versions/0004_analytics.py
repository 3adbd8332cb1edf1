"""Analytics: views over the event log, and an index for reading it by type across generations.

Each view is documented with example queries in docs/analytics.md. Per-generation reads of
these views use the events' primary key (generation_id, seq); reads by event type across all
generations use generation_events_type_idx.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VIEWS = {
    "analytics_phase_durations": """
SELECT
    e.generation_id,
    e.stage AS phase,
    min(e.created_at) FILTER (WHERE e.type = 'phase.started') AS started_at,
    max(e.created_at) FILTER (WHERE e.type = 'phase.completed') AS completed_at,
    extract(epoch FROM max(e.created_at) FILTER (WHERE e.type = 'phase.completed')
        - min(e.created_at) FILTER (WHERE e.type = 'phase.started')) AS duration_s,
    count(*) FILTER (WHERE e.type = 'phase.started') AS starts
FROM generation_events AS e
WHERE e.type IN ('phase.started', 'phase.completed')
GROUP BY e.generation_id, e.stage
""",
    "analytics_generation_runs": """
SELECT
    g.id AS generation_id,
    g.owner,
    g.provider,
    g.model,
    g.status AS outcome,
    g.created_at,
    finished.created_at AS finished_at,
    extract(epoch FROM finished.created_at - g.created_at) AS duration_s,
    extract(epoch FROM first_event.created_at - g.created_at) AS to_first_event_s,
    extract(epoch FROM first_file.created_at - g.created_at) AS to_first_file_s
FROM generations AS g
LEFT JOIN generation_events AS finished
    ON finished.generation_id = g.id
    AND finished.seq = g.last_seq
    AND g.status IN ('succeeded', 'failed', 'cancelled')
LEFT JOIN generation_events AS first_event
    ON first_event.generation_id = g.id
    -- Why seq 2: seq 1 is generation.queued, which the API appends in the same transaction
    -- that creates the row, so it tells nothing about the wait. seq 2 is the first event
    -- after it: the claiming worker's generation.started (or generation.cancelled, when the
    -- run was cancelled before any worker took it), i.e. the time a run waited for a worker.
    -- A fixed seq reads one row by the primary key (generation_id, seq), not by type.
    AND first_event.seq = 2
LEFT JOIN LATERAL (
    SELECT min(f.created_at) AS created_at
    FROM generation_events AS f
    WHERE f.generation_id = g.id
      AND f.type = 'file.saved'
) AS first_file ON true
""",
    "analytics_outcomes_daily": """
SELECT
    r.owner,
    date_trunc('day', r.created_at) AS day,
    r.outcome,
    count(*) AS generations,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_s) AS p50_duration_s,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_s) AS p95_duration_s
FROM analytics_generation_runs AS r
GROUP BY r.owner, date_trunc('day', r.created_at), r.outcome
""",
    "analytics_token_usage": """
SELECT
    g.owner,
    g.provider,
    coalesce(e.payload ->> 'model', g.model) AS model,
    count(*) AS phases,
    sum((e.payload ->> 'prompt_tokens')::bigint) AS prompt_tokens,
    sum((e.payload ->> 'output_tokens')::bigint) AS output_tokens
FROM generation_events AS e
JOIN generations AS g ON g.id = e.generation_id
WHERE e.type = 'phase.completed'
GROUP BY g.owner, g.provider, coalesce(e.payload ->> 'model', g.model)
""",
    "analytics_recoveries": """
SELECT
    g.owner,
    CASE e.type
        WHEN 'generation.resumed' THEN 'resumed'
        WHEN 'generation.failed' THEN 'failed'
        ELSE 'phase_retry'
    END AS kind,
    coalesce(e.payload ->> 'error', e.payload ->> 'reason', '') AS reason,
    count(*) AS occurrences,
    count(DISTINCT e.generation_id) AS generations
FROM generation_events AS e
JOIN generations AS g ON g.id = e.generation_id
WHERE e.type IN ('generation.resumed', 'generation.failed')
   OR (e.type = 'phase.started' AND (e.payload ->> 'attempt')::int > 1)
GROUP BY 1, 2, 3
""",
    "analytics_event_counts": """
SELECT
    e.generation_id,
    e.type,
    count(*) AS events
FROM generation_events AS e
GROUP BY e.generation_id, e.type
""",
}


def upgrade() -> None:
    op.create_index("generation_events_type_idx", "generation_events", ["type", "created_at"])
    for name, query in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {query}")


def downgrade() -> None:
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW {name}")
    op.drop_index("generation_events_type_idx", table_name="generation_events")
