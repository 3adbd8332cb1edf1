"""Filling the event log to a given size as fast as COPY allows (case 11).

Rows are made up (``bench/logruns.py``: what they are), a chunk at a time in a thread while
the chunk before is stored, and sent by binary COPY (asyncpg's ``copy_records_to_table``) into
the PARENT tables ``generations``, ``generation_events`` and ``generated_files``: if those
are range-partitioned, PostgreSQL routes every row to its partition. Before the COPY the fill
makes the monthly partitions its runs' months need (``partitions.ensure_partitions`` with
``now`` at each month's start), so that every run lands in its month's partition, as the
service's would, not in the DEFAULT one. Only the columns of ``service/store/tables.py`` are
named; every other column takes its default.

``tx_id``: the global feed only reads events whose ``tx_id`` is below the oldest running
transaction (migration 0003), so made-up ids must lie below the server's transaction counter.
The fill numbers its transactions from the counter at its start upwards (``tx_id`` grows
with time, past every real one before), then uses up that many transaction ids
(``BURN_XIDS``: one subtransaction each, in one transaction) so the counter passes them all.

The chain column is left at its default (zeros: "written by hand, not by the append"); the
append's hash over these rows is not what is measured here.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.logruns import Runs
from service.store import partitions
from service.store.db import Connection

EVENT_COLUMNS = (
    "generation_id",
    "seq",
    "type",
    "status",
    "stage",
    "progress",
    "message",
    "payload",
    "created_at",
    "idempotency_key",
    "owner",
    "tx_id",
)
FILE_COLUMNS = (
    "generation_id",
    "path",
    "content",
    "size",
    "sha256",
    "language",
    "seq",
    "created_at",
)
GENERATION_COLUMNS = (
    "id",
    "owner",
    "status",
    "stage",
    "message",
    "progress",
    "last_seq",
    "spec",
    "provider",
    "model",
    "error",
    "attempt",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
)
PERIOD: partitions.Period = "month"  # the service's default (``partition_period``)
COPY_CHUNK = 50_000  # events per COPY statement (and transaction)

# Use up ``$1`` transaction ids: a subtransaction that writes gets one of its own.
BURN_XIDS = """
DO $$
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS bench_xid_burn (n int);
    FOR i IN 1..%d LOOP
        BEGIN
            INSERT INTO bench_xid_burn VALUES (i);
        EXCEPTION WHEN others THEN RAISE;
        END;
    END LOOP;
    DROP TABLE bench_xid_burn;
END
$$
"""

# The secondary indexes of a table, as statements that re-create them (the primary key and
# unique constraints stay: dropping those would drop what the fill relies on).
SELECT_SECONDARY_INDEXES = """
SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index AS i
WHERE i.indrelid = $1::regclass
  AND NOT i.indisprimary
  AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conindid = i.indexrelid)
"""


@dataclass(slots=True)
class FillStats:
    events: int = 0
    files: int = 0
    runs: int = 0
    seconds: float = 0.0
    wal_bytes: int = 0
    index_rebuild_s: float = 0.0
    xid_burn_s: float = 0.0
    partitions_made: list[str] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


async def fill(conn: Connection, runs: Runs, events: int, *, rebuild_indexes: bool) -> FillStats:
    """Add about ``events`` events (whole runs made up by ``runs``) by COPY; see the module
    docstring. ``rebuild_indexes``: drop the secondary indexes first, re-create them after."""
    stats = FillStats()
    runs_before = len(runs.made)
    wal_before = await conn.fetchval("SELECT pg_current_wal_lsn()")
    tx_base = int(await conn.fetchval("SELECT pg_current_xact_id()::text::bigint"))
    started = time.perf_counter()
    stats.partitions_made = await make_partitions(conn, *runs.starts(events))
    dropped = await _drop_secondary_indexes(conn) if rebuild_indexes else []
    rows = runs.rows(events, tx_base)

    def take() -> tuple[dict[str, list[tuple[Any, ...]]], bool]:
        """The next chunk of rows, and whether it is the last."""
        chunk: dict[str, list[tuple[Any, ...]]] = {"generation": [], "event": [], "file": []}
        for kind, row in rows:
            chunk[kind].append(row)
            if kind == "event" and len(chunk["event"]) >= COPY_CHUNK:
                return chunk, False
        return chunk, True

    max_tx = tx_base
    # Generating a chunk (in a thread) overlaps storing the one before: asyncpg waits on
    # the socket without the GIL, and the server does the rest.
    upcoming = asyncio.create_task(asyncio.to_thread(take))
    done = False
    while not done:
        chunk, done = await upcoming
        if not done:
            upcoming = asyncio.create_task(asyncio.to_thread(take))
        async with conn.transaction():
            for kind, table, columns in COPIES:
                if chunk[kind]:
                    await conn.copy_records_to_table(table, records=chunk[kind], columns=columns)
        stats.events += len(chunk["event"])
        stats.files += len(chunk["file"])
        if chunk["event"]:
            max_tx = max(max_tx, chunk["event"][-1][-1])
    if dropped:
        rebuilt = time.perf_counter()
        for statement in dropped:
            await conn.execute(statement)
        stats.index_rebuild_s = time.perf_counter() - rebuilt
    burn = time.perf_counter()
    now = int(await conn.fetchval("SELECT pg_current_xact_id()::text::bigint"))
    if max_tx >= now:
        await conn.execute(BURN_XIDS % (max_tx + 1 - now))
    stats.xid_burn_s = time.perf_counter() - burn
    stats.seconds = time.perf_counter() - started
    stats.runs = len(runs.made) - runs_before
    stats.wal_bytes = int(
        await conn.fetchval("SELECT pg_current_wal_lsn() - $1::pg_lsn", wal_before)
    )
    return stats


COPIES = (
    ("generation", "generations", GENERATION_COLUMNS),
    ("event", "generation_events", EVENT_COLUMNS),
    ("file", "generated_files", FILE_COLUMNS),
)


async def make_partitions(conn: Connection, first: datetime, last: datetime) -> list[str]:
    """The monthly partitions of the months from ``first`` to ``last``, where missing: each
    made as the current period of its month's start (``ahead=0``), in one transaction, no
    fence (the service makes the coming months ahead of time; a fill makes past ones)."""
    made = []
    month = partitions.period_start(PERIOD, first)
    while month <= last:
        made += await partitions.ensure_partitions(conn, PERIOD, 0, month)
        month = partitions.next_period(PERIOD, month)
    return made


async def _drop_secondary_indexes(conn: Connection) -> list[str]:
    """Drop the log's secondary indexes; returns the statements that re-create them."""
    statements = []
    for table in ("generation_events", "generated_files"):
        for index in await conn.fetch(SELECT_SECONDARY_INDEXES, table):
            await conn.execute(f"DROP INDEX {index['name']}")
            statements.append(index["definition"])
    return statements
