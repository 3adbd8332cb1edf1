"""All SQL of rebuilding the generations' projected state from their events alone.

Every append sets the generation row's status, stage, progress and message to its last
event's, ``last_seq`` to that event's seq, ``error`` from a ``generation.failed`` event's
``data.error``, and stamps ``started_at`` (at the first event past queued) and
``finished_at`` (at the terminal event). ``REBUILT`` computes the same from the log, so an
operator can check that the rows still say what the log says, or make them say it again.
The two timestamps are compared for presence only: the append stamps them with its own
clock reading, a few microseconds from the event's.

The rows can only be rebuilt from a sound log, so ``SELECT_LOG_DEFECTS`` checks the log itself
for what the append never writes: a seq gap, a type outside the vocabulary, anything after
the terminal event, a finished row without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from service.events import EventType
from service.store.db import Connection

# Each generation's row as its log says it should be (a WITH prefix ending in `rebuilt`).
REBUILT = """
WITH last_event AS (
    SELECT DISTINCT ON (generation_id)
        generation_id, seq, status, stage, progress, message, type
    FROM generation_events
    ORDER BY generation_id, seq DESC
),
failure AS (
    -- The last attempt's: a generation.retried after a failure clears the row's error.
    SELECT DISTINCT ON (generation_id)
        generation_id,
        CASE WHEN type = 'generation.failed' THEN payload ->> 'error' END AS error
    FROM generation_events
    WHERE type IN ('generation.failed', 'generation.retried')
    ORDER BY generation_id, seq DESC
),
progressed AS (
    SELECT generation_id, bool_or(status <> 'queued') AS started
    FROM generation_events
    GROUP BY generation_id
),
rebuilt AS (
    SELECT
        g.id,
        coalesce(e.status, 'queued') AS status,
        coalesce(e.stage, 'queued') AS stage,
        coalesce(e.progress, 0) AS progress,
        coalesce(e.message, '') AS message,
        coalesce(e.seq, 0) AS last_seq,
        f.error,
        coalesce(p.started, false) AS started,
        coalesce(
            e.type IN ('generation.succeeded', 'generation.failed', 'generation.cancelled'),
            false
        ) AS finished
    FROM generations AS g
    LEFT JOIN last_event AS e ON e.generation_id = g.id
    LEFT JOIN failure AS f ON f.generation_id = g.id
    LEFT JOIN progressed AS p ON p.generation_id = g.id
)
"""

# The generation rows that disagree with their log: each column as stored and as rebuilt.
SELECT_DIFFERENCES = (
    REBUILT
    + """
SELECT
    g.id,
    g.status, r.status AS rebuilt_status,
    g.stage, r.stage AS rebuilt_stage,
    g.progress, r.progress AS rebuilt_progress,
    g.message, r.message AS rebuilt_message,
    g.last_seq, r.last_seq AS rebuilt_last_seq,
    g.error, r.error AS rebuilt_error,
    g.started_at IS NOT NULL AS started, r.started AS rebuilt_started,
    g.finished_at IS NOT NULL AS finished, r.finished AS rebuilt_finished
FROM generations AS g
JOIN rebuilt AS r ON r.id = g.id
WHERE (g.status, g.stage, g.progress, g.message, g.last_seq,
       g.started_at IS NOT NULL, g.finished_at IS NOT NULL)
      IS DISTINCT FROM
      (r.status, r.stage, r.progress, r.message, r.last_seq, r.started, r.finished)
   OR g.error IS DISTINCT FROM r.error
ORDER BY g.created_at, g.id
"""
)

# Set every generation row that differs from its rebuilt state to that state.
UPDATE_FROM_LOG = (
    REBUILT
    + """
UPDATE generations AS g
SET status = r.status,
    stage = r.stage,
    progress = r.progress,
    message = r.message,
    last_seq = r.last_seq,
    error = r.error,
    started_at = CASE
        WHEN NOT r.started THEN NULL
        ELSE coalesce(
            g.started_at,
            (
                SELECT min(created_at)
                FROM generation_events AS e
                WHERE e.generation_id = g.id
                  AND e.status <> 'queued'
            )
        )
    END,
    finished_at = CASE
        WHEN NOT r.finished THEN NULL
        ELSE coalesce(
            g.finished_at,
            (
                SELECT max(created_at)
                FROM generation_events AS e
                WHERE e.generation_id = g.id
            )
        )
    END,
    updated_at = clock_timestamp()
FROM rebuilt AS r
WHERE r.id = g.id
  AND ((g.status, g.stage, g.progress, g.message, g.last_seq,
        g.started_at IS NOT NULL, g.finished_at IS NOT NULL)
       IS DISTINCT FROM
       (r.status, r.stage, r.progress, r.message, r.last_seq, r.started, r.finished)
    OR g.error IS DISTINCT FROM r.error)
"""
)

# Where a log itself is broken, one row per defect, in the generations' order then seq ($1: the
# event types of the vocabulary). A `gap`: a seq that is not the one before it plus one (`other_seq`
# is the one before; 0 when the log starts above 1). An `unknown_type`: a type outside the
# vocabulary. `after_terminal` and `second_terminal`: an event, or another terminal event, after
# a terminal one (`other_seq`) with no generation.retried between (a retried run's log goes on:
# generation.retried right after its generation.failed or .cancelled). `misplaced_retry`: a
# generation.retried anywhere else. `missing_terminal`: a row that says it finished over a
# log without a terminal event (`seq` is the log's last, 0 for none). No row: a sound log.
SELECT_LOG_DEFECTS = """
WITH ordered AS (
    SELECT
        generation_id,
        seq,
        type,
        lag(seq, 1, 0::bigint) OVER by_seq AS previous_seq,
        lag(type) OVER by_seq AS previous_type,
        max(seq) FILTER (
            WHERE type IN ('generation.succeeded', 'generation.failed', 'generation.cancelled')
        ) OVER before AS terminal_seq,
        max(seq) FILTER (WHERE type = 'generation.retried') OVER before AS retried_seq
    FROM generation_events
    WINDOW by_seq AS (PARTITION BY generation_id ORDER BY seq),
           before AS (by_seq ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),
defects AS (
    SELECT generation_id, seq, 'gap' AS defect, type, previous_seq AS other_seq
    FROM ordered
    WHERE seq <> previous_seq + 1
    UNION ALL
    SELECT generation_id, seq, 'unknown_type', type, NULL
    FROM ordered
    WHERE type <> ALL($1::text[])
    UNION ALL
    SELECT
        generation_id,
        seq,
        CASE
            WHEN type IN ('generation.succeeded', 'generation.failed', 'generation.cancelled')
                THEN 'second_terminal'
            ELSE 'after_terminal'
        END,
        type,
        terminal_seq
    FROM ordered
    WHERE terminal_seq > coalesce(retried_seq, 0)
      AND NOT (
        type = 'generation.retried'
        AND previous_type IN ('generation.failed', 'generation.cancelled')
      )
    UNION ALL
    SELECT generation_id, seq, 'misplaced_retry', type, previous_seq
    FROM ordered
    WHERE type = 'generation.retried'
      AND previous_type IS DISTINCT FROM 'generation.failed'
      AND previous_type IS DISTINCT FROM 'generation.cancelled'
    UNION ALL
    SELECT g.id, coalesce(max(e.seq), 0), 'missing_terminal', NULL, NULL
    FROM generations AS g
    LEFT JOIN generation_events AS e ON e.generation_id = g.id
    WHERE g.status IN ('succeeded', 'failed', 'cancelled')
       OR g.finished_at IS NOT NULL
    GROUP BY g.id
    HAVING NOT coalesce(
        bool_or(e.type IN ('generation.succeeded', 'generation.failed', 'generation.cancelled')),
        false
    )
)
SELECT
    d.generation_id,
    d.seq,
    d.defect,
    d.type,
    d.other_seq,
    g.status
FROM defects AS d
JOIN generations AS g ON g.id = d.generation_id
ORDER BY g.created_at, d.generation_id, d.seq, d.defect
"""

COLUMNS = ("status", "stage", "progress", "message", "last_seq", "error", "started", "finished")


@dataclass(frozen=True, slots=True)
class Difference:
    generation_id: UUID
    column: str
    projected: object
    rebuilt: object


@dataclass(frozen=True, slots=True)
class LogDefect:
    """Where a generation's log itself is broken (see SELECT_LOG_DEFECTS for each ``defect``)."""

    generation_id: UUID
    seq: int
    defect: str  # gap, unknown_type, after_terminal, second_terminal, missing_terminal
    type: str | None  # the event's type (none for missing_terminal)
    other_seq: int | None  # gap: the seq before; after or second terminal: the first terminal
    status: str  # the row's status


async def select_log_defects(conn: Connection) -> list[LogDefect]:
    """Every seq gap, unknown type, event after the terminal one and missing terminal event."""
    rows = await conn.fetch(SELECT_LOG_DEFECTS, [str(kind) for kind in EventType])
    return [
        LogDefect(
            row["generation_id"],
            row["seq"],
            row["defect"],
            row["type"],
            row["other_seq"],
            row["status"],
        )
        for row in rows
    ]


async def select_differences(conn: Connection) -> list[Difference]:
    """Where a generation row disagrees with its log, column by column."""
    differences: list[Difference] = []
    for row in await conn.fetch(SELECT_DIFFERENCES):
        for column in COLUMNS:
            if row[column] != row[f"rebuilt_{column}"]:
                differences.append(
                    Difference(row["id"], column, row[column], row[f"rebuilt_{column}"])
                )
    return differences


async def rebuild(conn: Connection) -> int:
    """Make every row say what its log says; returns how many rows changed."""
    status: str = await conn.execute(UPDATE_FROM_LOG)
    return int(status.rsplit(" ", 1)[-1])
