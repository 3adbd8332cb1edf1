"""All SQL of reading what a snapshot reduces: a run's milestones, its last event, the end of
its model text, all up to one seq.

The seq is the generation row's ``last_seq``, read in the milestones' own statement; every
later read is bounded by it. Events at or below a seq never change, so the reads agree with
each other and with the tail a stream sends after the seq, whichever transaction each runs in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from uuid import UUID

from service.store.db import Connection
from service.store.event_log import EVENT_JSON, TIMESTAMP_TEXT

# Deltas read per page of the model text's tail, newest first: one page holds the snapshot's
# 4,000 characters at the 10-20 characters a delta usually holds.
TAIL_DELTAS: Final = 400

# Every event of a generation ($1) but the model's text, up to the row's last seq, with that
# seq on each row; through generation_events_milestones_idx (migration 0010). No row: no
# such generation.
SELECT_MILESTONES = f"""
SELECT
    e.seq,
    e.type,
    e.stage,
    {TIMESTAMP_TEXT.replace("created_at", "e.created_at")} AS timestamp,
    e.payload::text AS data,
    g.last_seq
FROM generations AS g
JOIN generation_events AS e
  ON e.generation_id = g.id
 AND e.seq <= g.last_seq
 AND e.type <> 'llm.delta'
WHERE g.id = $1
ORDER BY e.seq
"""

# One event ($1, $2) as clients see it.
SELECT_EVENT = f"""
SELECT {EVENT_JSON} AS json
FROM generation_events
WHERE generation_id = $1
  AND seq = $2
"""

# The newest model text up to seq $2 ($1: generation), newest first, at most $3 deltas.
SELECT_TEXT_TAIL = """
SELECT
    seq,
    payload ->> 'text' AS text
FROM generation_events
WHERE generation_id = $1
  AND seq <= $2
  AND type = 'llm.delta'
  AND payload ->> 'text' <> ''
ORDER BY seq DESC
LIMIT $3
"""

# Whether the model wrote any text before seq $2 ($1: generation).
SELECT_TEXT_BEFORE = """
SELECT EXISTS (
    SELECT 1
    FROM generation_events
    WHERE generation_id = $1
      AND seq < $2
      AND type = 'llm.delta'
      AND payload ->> 'text' <> ''
)
"""


@dataclass(frozen=True, slots=True)
class Milestone:
    seq: int
    type: str
    stage: str
    timestamp: str
    data: str  # JSON text


@dataclass(frozen=True, slots=True)
class SnapshotRows:
    """What a snapshot at ``seq`` is reduced from."""

    seq: int
    milestones: list[Milestone]
    last_event: str  # event ``seq`` as clients see it (JSON text)
    texts: list[str]  # the newest model text, newest first
    text_before: bool  # the model wrote text before the oldest of ``texts``


async def select_snapshot_rows(
    conn: Connection, generation_id: UUID, text_chars: int
) -> SnapshotRows | None:
    """What a snapshot of the generation as it stands now needs; None: no such generation.
    ``text_chars``: how much of the model's text to read at least (when there is that much)."""
    rows = await conn.fetch(SELECT_MILESTONES, generation_id)
    if not rows:
        return None
    seq = int(rows[0]["last_seq"])
    last_event = await conn.fetchval(SELECT_EVENT, generation_id, seq)
    texts: list[str] = []
    chars, before = 0, seq + 1
    while chars < text_chars:
        page = await conn.fetch(SELECT_TEXT_TAIL, generation_id, before - 1, TAIL_DELTAS)
        texts += (row["text"] for row in page)
        chars += sum(len(row["text"]) for row in page)
        if len(page) < TAIL_DELTAS:
            text_before = False  # read back to the first delta
            break
        before = page[-1]["seq"]
    else:
        text_before = bool(await conn.fetchval(SELECT_TEXT_BEFORE, generation_id, before))
    return SnapshotRows(
        seq=seq,
        milestones=[
            Milestone(row["seq"], row["type"], row["stage"], row["timestamp"], row["data"])
            for row in rows
        ],
        last_event=last_event,
        texts=texts,
        text_before=text_before,
    )
