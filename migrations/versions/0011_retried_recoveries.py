"""A run may be retried (``generation.retried``, after it failed or was cancelled): the
recoveries view counts retries as their own kind, ``retried``, with the way the attempt
before ended as the reason.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

RECOVERIES = """
SELECT
    g.owner,
    CASE e.type
        WHEN 'generation.resumed' THEN 'resumed'
        WHEN 'generation.failed' THEN 'failed'
        WHEN 'generation.retried' THEN 'retried'
        WHEN 'phase.completed' THEN 'repair'
        ELSE 'phase_retry'
    END AS kind,
    coalesce(e.payload ->> 'error', e.payload ->> 'reason', e.payload ->> 'after', '') AS reason,
    count(*) AS occurrences,
    count(DISTINCT e.generation_id) AS generations
FROM generation_events AS e
JOIN generations AS g ON g.id = e.generation_id
WHERE e.type IN ('generation.resumed', 'generation.failed', 'generation.retried')
   OR (e.type = 'phase.started' AND (e.payload ->> 'attempt')::int > 1)
   OR (e.type = 'phase.completed' AND e.stage = 'repair')
GROUP BY 1, 2, 3
"""

# 0008's, for the downgrade.
OLD_RECOVERIES = """
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


def upgrade() -> None:
    op.execute(f"CREATE OR REPLACE VIEW analytics_recoveries AS {RECOVERIES}")


def downgrade() -> None:
    op.execute(f"CREATE OR REPLACE VIEW analytics_recoveries AS {OLD_RECOVERIES}")
