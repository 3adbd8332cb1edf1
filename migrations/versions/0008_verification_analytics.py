"""Analytics of verification: a row per verify round, repairs counted among the recoveries, and
phase durations per round (verify and repair run more than once in a run).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Columns as in 0004, then ``round`` (NULL for the building phases): CREATE OR REPLACE may only
# add columns at the end.
PHASE_DURATIONS = """
SELECT
    e.generation_id,
    e.stage AS phase,
    min(e.created_at) FILTER (WHERE e.type = 'phase.started') AS started_at,
    max(e.created_at) FILTER (WHERE e.type = 'phase.completed') AS completed_at,
    extract(epoch FROM max(e.created_at) FILTER (WHERE e.type = 'phase.completed')
        - min(e.created_at) FILTER (WHERE e.type = 'phase.started')) AS duration_s,
    count(*) FILTER (WHERE e.type = 'phase.started') AS starts,
    (e.payload ->> 'round')::int AS round
FROM generation_events AS e
WHERE e.type IN ('phase.started', 'phase.completed')
GROUP BY e.generation_id, e.stage, (e.payload ->> 'round')::int
"""

RECOVERIES = """
SELECT
    g.owner,
    CASE e.type
        WHEN 'generation.resumed' THEN 'resumed'
        WHEN 'generation.failed' THEN 'failed'
        WHEN 'phase.completed' THEN 'repair'
        ELSE 'phase_retry'
    END AS kind,
    coalesce(e.payload ->> 'error', e.payload ->> 'reason', '') AS reason,
    count(*) AS occurrences,
    count(DISTINCT e.generation_id) AS generations
FROM generation_events AS e
JOIN generations AS g ON g.id = e.generation_id
WHERE e.type IN ('generation.resumed', 'generation.failed')
   OR (e.type = 'phase.started' AND (e.payload ->> 'attempt')::int > 1)
   OR (e.type = 'phase.completed' AND e.stage = 'repair')
GROUP BY 1, 2, 3
"""

# One row per completed verify round (its phase.completed holds the outcome).
VERIFICATIONS = """
SELECT
    e.generation_id,
    g.owner,
    g.provider,
    (e.payload ->> 'round')::int AS round,
    e.payload -> 'verification' ->> 'level' AS level,
    (e.payload -> 'verification' ->> 'ok')::boolean AS ok,
    e.payload -> 'verification' ->> 'summary' AS summary,
    failed.step AS failed_step,
    tests.passed AS tests_passed,
    tests.failed AS tests_failed,
    (e.payload ->> 'duration_ms')::float8 / 1000 AS duration_s,
    e.created_at AS completed_at
FROM generation_events AS e
JOIN generations AS g ON g.id = e.generation_id
LEFT JOIN LATERAL (
    SELECT c ->> 'step' AS step
    FROM jsonb_array_elements(e.payload -> 'verification' -> 'checks') AS c
    WHERE NOT (c ->> 'ok')::boolean
    LIMIT 1
) AS failed ON true
LEFT JOIN LATERAL (
    SELECT
        (c -> 'counts' ->> 'passed')::int AS passed,
        (c -> 'counts' ->> 'failed')::int + (c -> 'counts' ->> 'errors')::int AS failed
    FROM jsonb_array_elements(e.payload -> 'verification' -> 'checks') AS c
    WHERE c ->> 'step' = 'tests'
) AS tests ON true
WHERE e.type = 'phase.completed'
  AND e.stage = 'verify'
"""

# 0004's definitions, for the downgrade.
OLD_PHASE_DURATIONS = """
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
"""

OLD_RECOVERIES = """
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
"""


def upgrade() -> None:
    op.execute(f"CREATE OR REPLACE VIEW analytics_phase_durations AS {PHASE_DURATIONS}")
    op.execute(f"CREATE OR REPLACE VIEW analytics_recoveries AS {RECOVERIES}")
    op.execute(f"CREATE VIEW analytics_verifications AS {VERIFICATIONS}")


def downgrade() -> None:
    op.execute("DROP VIEW analytics_verifications")
    op.execute("DROP VIEW analytics_phase_durations")
    op.execute(f"CREATE VIEW analytics_phase_durations AS {OLD_PHASE_DURATIONS}")
    op.execute(f"CREATE OR REPLACE VIEW analytics_recoveries AS {OLD_RECOVERIES}")
