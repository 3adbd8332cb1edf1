"""Taking a snapshot of a run: its reduced state up to its last event, as one frame's JSON.

Application logic: the rows come from ``store/snapshots.py``, the reduction from
``service/snapshot.py``; ``api/stream.py`` and the events endpoint send the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from uuid import UUID

from service.events import TERMINAL_TYPES
from service.snapshot import MODEL_TEXT_CHARS, Reduction, SnapshotData
from service.store import snapshots
from service.store.db import Connection, Pool, connection
from service.store.snapshots import SnapshotRows


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    json: str  # SnapshotData as one line of JSON
    is_final: bool  # it stands for the terminal event: nothing follows it


async def take(pool: Pool, generation_id: UUID) -> Snapshot | None:
    """The run as it stands now; None: no such generation (the caller checked the owner)."""
    async with connection(pool) as conn:
        return await read(conn, generation_id)


async def read(conn: Connection, generation_id: UUID) -> Snapshot | None:
    rows = await snapshots.select_snapshot_rows(conn, generation_id, MODEL_TEXT_CHARS)
    if rows is None:
        return None
    data = reduce_rows(rows)
    return Snapshot(
        seq=data["seq"],
        json=json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        is_final=data["last_event"]["type"] in TERMINAL_TYPES,
    )


def reduce_rows(rows: SnapshotRows) -> SnapshotData:
    """The milestones in order, each gap between their seqs counted as that many deltas (seqs
    grow by exactly one), then the model text's tail."""
    reduction = Reduction()
    previous = 0
    for milestone in rows.milestones:
        reduction.skip_deltas(milestone.seq - previous - 1)
        reduction.apply(
            {
                "seq": milestone.seq,
                "type": milestone.type,
                "stage": milestone.stage,
                "timestamp": milestone.timestamp,
                "data": json.loads(milestone.data),
            }
        )
        previous = milestone.seq
    reduction.skip_deltas(rows.seq - previous)
    reduction.ends_with(json.loads(rows.last_event))
    reduction.model_tail(rows.texts, rows.text_before)
    return reduction.snapshot()
