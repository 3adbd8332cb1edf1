"""All SQL of moving whole generations between genstreams: their rows, events and files, each
as the JSON of its row (``to_jsonb``), read back with ``jsonb_populate_record``.

Going through the row's JSON rather than a column list keeps export and import exact (every
column, timestamps to the microsecond, ``payload`` as stored). An import writes only rows that
passed ``operations/validation.py``, which names every column of the three tables (a test keeps
that list in step with ``tables.py``). Some columns are this database's own and are not carried
over: ``tx_id`` (a transaction id of the other cluster would order the global feed wrongly; an
imported event takes the importing transaction's), an event's ``owner`` (the generation's row
says whose it is, and an import may give it another owner) and a run's claim and lease. An event's
``chain`` is carried over and checked once the generation is in: an event edited or removed in
the file refuses the generation (an export made before chain hashes gets them computed).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from service.errors import InvalidRequest
from service.store import event_log
from service.store.db import Connection

# Ids of the generations to export, oldest first: among ids $1, created in [$2, $3) (NULL: any).
SELECT_GENERATION_IDS = """
SELECT id
FROM generations
WHERE ($1::uuid[] IS NULL OR id = ANY($1::uuid[]))
  AND ($2::timestamptz IS NULL OR created_at >= $2)
  AND ($3::timestamptz IS NULL OR created_at < $3)
ORDER BY created_at, id
"""

# One generation's row ($1: id) as JSON text.
SELECT_GENERATION_ROW = """
SELECT to_jsonb(g)::text
FROM generations AS g
WHERE id = $1
"""

# One page of a generation's ($1) event rows after seq $2, at most $3, as JSON text (no tx_id,
# no owner: the generation's row says whose it is).
SELECT_EVENT_ROWS = """
SELECT (to_jsonb(e) - 'tx_id' - 'owner')::text
FROM generation_events AS e
WHERE generation_id = $1
  AND seq > $2
ORDER BY seq
LIMIT $3
"""

# A generation's ($1) file rows as JSON text, in the order they were saved.
SELECT_FILE_ROWS = """
SELECT to_jsonb(f)::text
FROM generated_files AS f
WHERE generation_id = $1
ORDER BY seq, path
"""

# Whether a generation ($1: id) is here already.
SELECT_GENERATION_EXISTS = """
SELECT EXISTS (
    SELECT 1
    FROM generations
    WHERE id = $1
)
"""

# Import a generation's row from its JSON ($1), unclaimed; returns its id, or no row if it exists.
INSERT_GENERATION_ROW = """
INSERT INTO generations
SELECT *
FROM jsonb_populate_record(
    NULL::generations,
    $1::jsonb || '{"claimed_by": null, "lease_expires_at": null}'::jsonb
)
ON CONFLICT (id) DO NOTHING
RETURNING id
"""

# Import an event row from its JSON ($1), stamped with this transaction's id and the owner of
# the generation's row ($2); an export made before chain hashes gets the zero hash, replaced
# once all its events are in.
INSERT_EVENT_ROW = f"""
INSERT INTO generation_events
SELECT *
FROM jsonb_populate_record(
    NULL::generation_events,
    $1::jsonb || jsonb_build_object(
        'tx_id', pg_current_xact_id()::text::bigint,
        'chain', coalesce($1::jsonb ->> 'chain', '{event_log.ZERO_HASH}'),
        'owner', $2::text
    )
)
"""

# Import a file row from its JSON ($1).
INSERT_FILE_ROW = """
INSERT INTO generated_files
SELECT *
FROM jsonb_populate_record(NULL::generated_files, $1::jsonb)
"""

EVENT_PAGE = 1000


async def select_generation_ids(
    conn: Connection,
    ids: Sequence[UUID] | None,
    since: datetime | None,
    until: datetime | None,
) -> list[UUID]:
    rows = await conn.fetch(SELECT_GENERATION_IDS, list(ids) if ids else None, since, until)
    return [row["id"] for row in rows]


async def select_generation_row(conn: Connection, generation_id: UUID) -> str | None:
    row: str | None = await conn.fetchval(SELECT_GENERATION_ROW, generation_id)
    return row


async def event_rows(conn: Connection, generation_id: UUID) -> AsyncIterator[str]:
    after = 0
    while rows := await conn.fetch(SELECT_EVENT_ROWS, generation_id, after, EVENT_PAGE):
        for row in rows:
            yield row[0]
        after += len(rows)


async def select_file_rows(conn: Connection, generation_id: UUID) -> list[str]:
    return [row[0] for row in await conn.fetch(SELECT_FILE_ROWS, generation_id)]


async def select_generation_exists(conn: Connection, generation_id: UUID) -> bool:
    exists: bool = await conn.fetchval(SELECT_GENERATION_EXISTS, generation_id)
    return exists


async def insert_generation(
    conn: Connection, generation: str, events: Sequence[str], files: Sequence[str]
) -> bool:
    """One generation, whole, in one transaction; False (nothing written) if its id exists.

    The rows come checked (``operations/validation.py``); a row PostgreSQL still refuses
    (a value or constraint those checks missed) rolls the generation back and is
    InvalidRequest, never a driver error.
    """
    try:
        async with conn.transaction():
            if await conn.fetchval(INSERT_GENERATION_ROW, generation) is None:
                return False
            owner = json.loads(generation)["owner"]
            await conn.executemany(INSERT_EVENT_ROW, [(event, owner) for event in events])
            await conn.executemany(INSERT_FILE_ROW, [(file,) for file in files])
            generation_id = UUID(json.loads(generation)["id"])
            await event_log.chain_unchained(conn, generation_id)
            checked = await event_log.check_chains(conn, [generation_id])
            if checked.breaks:
                first = checked.breaks[0]
                raise InvalidRequest(
                    f"its chain breaks at seq {first.seq} ({first.kind}): an event was "
                    "changed or removed after it was stored"
                )
    except (
        asyncpg.DataError,
        asyncpg.IntegrityConstraintViolationError,
        asyncpg.ProgramLimitExceededError,
    ) as exc:
        raise InvalidRequest(f"PostgreSQL refused it: {exc}") from exc
    return True
