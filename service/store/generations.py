"""SQL of the generations table outside the log: create, read, list, claim, cancel, files.

Every read takes the owner and filters on it, so another owner's generation is simply not
found (404, never 403: existence is not leaked).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from service.errors import Gone, NotFound
from service.events import NewEvent, Status, VerifyLevel
from service.store import event_log, retention
from service.store.db import Connection

JOBS_CHANNEL = "genstream_jobs"
CANCEL_CHANNEL = "genstream_cancel"

# Seconds since the run's last event but a stalled one: how long its log has heard nothing of
# its worker (an expression over a row with ``id``): read backwards on the primary key, it
# stops at the last event instead of reading the whole log.
SILENT_S = """(
    SELECT extract(epoch FROM clock_timestamp() - e.created_at)::float8
    FROM generation_events AS e
    WHERE e.generation_id = id
      AND e.type <> 'generation.stalled'
    ORDER BY e.seq DESC
    LIMIT 1
)"""

# Create a queued generation ($1 id, $2 owner, $3 spec, $4 provider, $5 model, $6 trace
# context, $7 verify level) and NOTIFY workers.
INSERT_GENERATION = f"""
WITH generation AS (
    INSERT INTO generations
        (id, owner, status, stage, message, spec, provider, model, trace_context, verify)
    VALUES ($1, $2, 'queued', 'queued', 'Queued', $3::json, $4, $5, $6::jsonb, $7)
    RETURNING id
)
SELECT pg_notify('{JOBS_CHANNEL}', generation.id::text)
FROM generation
"""

# Serialize creates for owner $1 until the transaction ends, in every process: the quota
# check and the insert that follows it are then one step for that owner.
LOCK_OWNER = """
SELECT pg_advisory_xact_lock(hashtextextended('genstream.owner:' || $1, 0))
"""

# Owner $1's load: unfinished generations, generations created in the last 60 s, and the
# seconds until the oldest of those leaves the window.
SELECT_OWNER_LOAD = """
SELECT
    (
        SELECT count(*)
        FROM generations
        WHERE owner = $1
          AND status IN ('queued', 'running')
    ) AS active,
    count(*) AS recent,
    coalesce(
        ceil(extract(epoch FROM min(created_at) + interval '60 seconds' - clock_timestamp())),
        0
    )::int AS window_clears_in_s
FROM generations
WHERE owner = $1
  AND created_at > clock_timestamp() - interval '60 seconds'
"""

# The columns a Generation is read from (a select list, not a query).
GENERATION_COLUMNS = """
    id, owner, status, stage, message, progress, last_seq, provider, model, verify,
    created_at, started_at, finished_at, error
"""

# One generation by id ($1), if its owner is $2.
SELECT_GENERATION = f"""
SELECT {GENERATION_COLUMNS}
FROM generations
WHERE id = $1
  AND owner = $2
"""

# One page of an owner's ($1) generations, newest first: status $2 (any if NULL), before the
# keyset (created_at $3, id $4) (from the newest if NULL), at most $5.
SELECT_GENERATIONS_PAGE = f"""
SELECT {GENERATION_COLUMNS}
FROM generations
WHERE owner = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
ORDER BY created_at DESC, id DESC
LIMIT $5
"""

# Lock a generation ($1, owner $2) for cancelling: where it stands and whether a worker holds it.
SELECT_GENERATION_FOR_CANCEL = """
SELECT
    status,
    stage,
    progress,
    claimed_by IS NOT NULL AND lease_expires_at > clock_timestamp() AS held
FROM generations
WHERE id = $1
  AND owner = $2
FOR UPDATE
"""

# Flag a generation ($1) as asked to cancel (the first ask's time stays) and NOTIFY.
# The NOTIFY reaches whichever process runs the generation (sent on commit).
UPDATE_CANCEL_REQUESTED = f"""
WITH flagged AS (
    UPDATE generations
    SET cancel_requested_at = coalesce(cancel_requested_at, clock_timestamp())
    WHERE id = $1
    RETURNING id
)
SELECT pg_notify('{CANCEL_CHANNEL}', flagged.id::text)
FROM flagged
"""

# Lock a generation ($1, owner $2) for a retry: how it ended and where it stands.
SELECT_GENERATION_FOR_RETRY = """
SELECT
    status,
    progress,
    attempt,
    redacted_at IS NOT NULL AS redacted
FROM generations
WHERE id = $1
  AND owner = $2
FOR UPDATE
"""

# Open a failed or cancelled generation ($1) for another attempt, held by nobody, asked to stop
# by nobody, and wake a worker (sent on commit, with the generation.retried the caller appends).
# The attempt moves on, so a worker still holding the old one (paused past its lease, say) is
# fenced off from the new attempt's log. Returns the new attempt.
UPDATE_REOPEN = f"""
WITH reopened AS (
    UPDATE generations
    SET status = 'queued',
        attempt = attempt + 1,
        error = NULL,
        finished_at = NULL,
        cancel_requested_at = NULL,
        claimed_by = NULL,
        lease_expires_at = NULL,
        updated_at = clock_timestamp()
    WHERE id = $1
      AND status IN ('failed', 'cancelled')
    RETURNING id, attempt
)
SELECT reopened.attempt, pg_notify('{JOBS_CHANNEL}', reopened.id::text)
FROM reopened
"""

# Claim the next claimable run for worker $1 for $2 seconds; returns it, or no row.
# A run is claimable when it is not finished and nobody holds a live lease on it: new runs,
# runs released on shutdown, and runs whose worker died (its lease ran out). Fairness: the
# next run is the oldest of the owner with the fewest runs held right now, so one owner's
# backlog delays another owner's new run by at most one run's slot (oldest first would make it
# wait for the whole backlog). Each claim bumps the attempt, which fences off every earlier
# holder (see event_log.append). SKIP LOCKED lets any number of workers poll the same queue
# without blocking each other.
UPDATE_CLAIM_NEXT = f"""
WITH pick AS (
    SELECT
        g.id,
        g.claimed_by AS stale_owner,
        g.attempt AS stale_attempt
    FROM generations AS g
    LEFT JOIN (
        SELECT
            owner,
            count(*) AS held
        FROM generations
        WHERE status IN ('queued', 'running')
          AND claimed_by IS NOT NULL
          AND lease_expires_at >= clock_timestamp()
        GROUP BY owner
    ) AS holding ON holding.owner = g.owner
    WHERE g.status IN ('queued', 'running')
      AND (g.claimed_by IS NULL OR g.lease_expires_at < clock_timestamp())
    ORDER BY coalesce(holding.held, 0), g.created_at
    LIMIT 1
    FOR UPDATE OF g SKIP LOCKED
),
claimed AS (
    UPDATE generations
    SET claimed_by = $1,
        attempt = attempt + 1,
        lease_expires_at = clock_timestamp() + make_interval(secs => $2)
    FROM pick
    WHERE generations.id = pick.id
    RETURNING
        generations.id,
        spec,
        provider,
        model,
        attempt,
        status,
        stage,
        progress,
        cancel_requested_at IS NOT NULL AS cancel_requested,
        owner,
        extract(epoch FROM created_at)::float8 AS created_at,
        trace_context,
        verify,
        pick.stale_owner,
        pick.stale_attempt
)
SELECT
    id,
    spec::text AS spec,
    provider,
    model,
    attempt,
    status,
    stage,
    progress,
    cancel_requested,
    owner,
    created_at,
    trace_context::text AS trace_context,
    verify,
    stale_owner,
    stale_attempt,
    {SILENT_S} AS silent_s
FROM claimed
"""

# Runs whose worker holds a lease that ran out and has not been swept or claimed since: each is
# released (claimable at once) with its attempt bumped, which fences off the silent holder for
# good, whatever it wakes up to write; returns what ``generation.stalled`` says of each.
# SKIP LOCKED: a claim or another sweep taking the same run wins; this one leaves it.
UPDATE_SWEEP_STALLED = f"""
WITH pick AS (
    SELECT
        g.id,
        g.claimed_by AS stale_owner,
        g.attempt AS stale_attempt
    FROM generations AS g
    WHERE g.status = 'running'
      AND g.claimed_by IS NOT NULL
      AND g.lease_expires_at < clock_timestamp()
    ORDER BY g.lease_expires_at
    LIMIT 100
    FOR UPDATE OF g SKIP LOCKED
),
swept AS (
    UPDATE generations
    SET claimed_by = NULL,
        lease_expires_at = NULL,
        attempt = attempt + 1
    FROM pick
    WHERE generations.id = pick.id
    RETURNING generations.id, attempt, stage, progress, pick.stale_owner, pick.stale_attempt
)
SELECT
    id,
    attempt,
    stage,
    progress,
    stale_owner,
    stale_attempt,
    {SILENT_S} AS silent_s,
    pg_notify('{JOBS_CHANNEL}', id::text)
FROM swept
"""

# Unclaimed generations by owner class (admin: the owner holds a live admin key), with the
# age of the oldest. A claim is unclaimed again when its lease ran out.
SELECT_QUEUE = """
SELECT
    CASE WHEN EXISTS (
        SELECT 1
        FROM api_keys AS k
        WHERE k.owner = g.owner
          AND k.is_admin
          AND k.revoked_at IS NULL
    ) THEN 'admin' ELSE 'standard' END AS owner_class,
    count(*) AS depth,
    extract(epoch FROM clock_timestamp() - min(g.created_at))::float8 AS oldest_age_s
FROM generations AS g
WHERE g.status IN ('queued', 'running')
  AND (g.claimed_by IS NULL OR g.lease_expires_at < clock_timestamp())
GROUP BY 1
"""

# Extend worker $1's leases on runs $3 to $2 seconds from now; returns the ids it still holds.
# The rows are locked in id order first (LockRows above the Sort), the order the appender's
# group takes them in (event_log.APPEND_MANY): an UPDATE alone locks them in its plan's order,
# and two statements locking the same rows in different orders can deadlock.
UPDATE_RENEW_LEASES = """
WITH locked AS (
    SELECT id
    FROM generations
    WHERE id = ANY($3::uuid[])
      AND claimed_by = $1
    ORDER BY id
    FOR UPDATE
)
UPDATE generations
SET lease_expires_at = clock_timestamp() + make_interval(secs => $2)
FROM locked
WHERE generations.id = locked.id
  AND generations.claimed_by = $1
RETURNING generations.id
"""

# Give up worker $1's leases on runs $2 and NOTIFY workers.
# Released runs are claimable at once; the NOTIFY wakes the other workers right away.
UPDATE_RELEASE_LEASES = f"""
WITH locked AS (  -- in id order, as UPDATE_RENEW_LEASES
    SELECT id
    FROM generations
    WHERE id = ANY($2::uuid[])
      AND claimed_by = $1
    ORDER BY id
    FOR UPDATE
),
released AS (
    UPDATE generations
    SET claimed_by = NULL,
        lease_expires_at = NULL
    FROM locked
    WHERE generations.id = locked.id
      AND generations.claimed_by = $1
    RETURNING generations.id
)
SELECT pg_notify('{JOBS_CHANNEL}', released.id::text)
FROM released
"""

# A generation's ($1, owner $2) files without their content, by path.
SELECT_FILES = """
SELECT f.path, f.size, f.sha256, f.language, f.seq
FROM generated_files AS f
JOIN generations AS g ON g.id = f.generation_id
WHERE f.generation_id = $1
  AND g.owner = $2
ORDER BY f.path
"""

# One file's content and language (and when retention redacted it): generation $1, owner $2,
# path $3.
SELECT_FILE = """
SELECT f.content, f.language, f.redacted_at
FROM generated_files AS f
JOIN generations AS g ON g.id = f.generation_id
WHERE f.generation_id = $1
  AND g.owner = $2
  AND f.path = $3
"""

# A generation's ($1, owner $2) files with their content, by path (for the archive).
SELECT_FILE_CONTENTS = """
SELECT f.path, f.content, f.redacted_at
FROM generated_files AS f
JOIN generations AS g ON g.id = f.generation_id
WHERE f.generation_id = $1
  AND g.owner = $2
ORDER BY f.path
"""


@dataclass(frozen=True, slots=True)
class Generation:
    id: UUID
    owner: str
    status: Status
    stage: str
    message: str
    progress: float
    last_seq: int
    provider: str
    model: str | None
    verify: VerifyLevel
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None


@dataclass(frozen=True, slots=True)
class Claimed:
    id: UUID
    spec: dict[str, Any]
    provider: str
    model: str | None
    attempt: int
    status: Status
    stage: str
    progress: float
    cancel_requested: bool
    owner: str = ""
    created_at: float = 0.0  # unix seconds
    trace_context: dict[str, str] | None = None  # the creating request's (observe/traces.py)
    verify: VerifyLevel = "off"
    # Taken over from a worker whose lease ran out (not released, not swept): who it was, its
    # attempt; and how long the log had heard nothing from the run.
    stale_owner: str | None = None
    stale_attempt: int | None = None
    silent_s: float | None = None


@dataclass(frozen=True, slots=True)
class FileInfo:
    path: str
    size: int
    sha256: str
    language: str
    seq: int


def _generation(row: asyncpg.Record) -> Generation:
    return Generation(**{**dict(row.items()), "status": Status(row["status"])})


async def insert_generation(
    conn: Connection,
    generation_id: UUID,
    owner: str,
    spec: Mapping[str, Any],
    provider: str,
    model: str | None,
    queued: NewEvent,
    trace_context: Mapping[str, str] | None = None,
    verify: VerifyLevel = "off",
) -> None:
    """The row and its first event (``generation.queued``) in one transaction."""
    async with conn.transaction():
        await conn.execute(
            INSERT_GENERATION,
            generation_id,
            owner,
            json.dumps(spec),
            provider,
            model,
            json.dumps(trace_context) if trace_context else None,
            verify,
        )
        await event_log.append(conn, generation_id, [queued])


@dataclass(frozen=True, slots=True)
class OwnerLoad:
    active: int  # queued + running
    recent: int  # created in the last 60 s
    window_clears_in_s: int  # until the oldest of the recent ones is 60 s old


async def lock_owner(conn: Connection, owner: str) -> None:
    """Hold the owner's create lock until the current transaction ends."""
    await conn.execute(LOCK_OWNER, owner)


async def select_owner_load(conn: Connection, owner: str) -> OwnerLoad:
    row = await conn.fetchrow(SELECT_OWNER_LOAD, owner)
    assert row is not None  # an aggregate always returns a row
    return OwnerLoad(row["active"], row["recent"], row["window_clears_in_s"])


async def select_generation(conn: Connection, owner: str, generation_id: UUID) -> Generation:
    row = await conn.fetchrow(SELECT_GENERATION, generation_id, owner)
    if row is None:
        raise await retention.missing(conn, generation_id, owner)
    return _generation(row)


async def select_generations(
    conn: Connection,
    owner: str,
    *,
    status: Status | None,
    before: tuple[datetime, UUID] | None,
    limit: int,
) -> list[Generation]:
    before_at, before_id = before if before else (None, None)
    rows = await conn.fetch(
        SELECT_GENERATIONS_PAGE,
        owner,
        status.value if status else None,
        before_at,
        before_id,
        limit,
    )
    return [_generation(row) for row in rows]


@dataclass(frozen=True, slots=True)
class CancelTarget:
    status: Status
    stage: str
    progress: float
    held: bool  # a worker holds a live lease on the run


async def lock_for_cancel(conn: Connection, owner: str, generation_id: UUID) -> CancelTarget:
    """Lock the row, flag the cancel (NOTIFY to the process running it), say where it stands.

    Call inside a transaction: the lock keeps a worker from claiming the run until the caller
    has decided (and possibly appended ``generation.cancelled`` itself).
    """
    row = await conn.fetchrow(SELECT_GENERATION_FOR_CANCEL, generation_id, owner)
    if row is None:
        raise await retention.missing(conn, generation_id, owner)
    await conn.execute(UPDATE_CANCEL_REQUESTED, generation_id)
    return CancelTarget(Status(row["status"]), row["stage"], row["progress"], row["held"])


@dataclass(frozen=True, slots=True)
class RetryTarget:
    status: Status
    progress: float
    attempt: int
    redacted: bool  # retention emptied its files: nothing to resume from


async def lock_for_retry(conn: Connection, owner: str, generation_id: UUID) -> RetryTarget:
    """Lock the row (call inside a transaction) and say how it stands; 404 if not the owner's."""
    row = await conn.fetchrow(SELECT_GENERATION_FOR_RETRY, generation_id, owner)
    if row is None:
        raise await retention.missing(conn, generation_id, owner)
    return RetryTarget(Status(row["status"]), row["progress"], row["attempt"], row["redacted"])


async def reopen(conn: Connection, generation_id: UUID) -> int:
    """The attempt the generation is at now (the retry's own, fencing off the one before)."""
    attempt: int = await conn.fetchval(UPDATE_REOPEN, generation_id)
    return attempt


async def claim_next(conn: Connection, worker_id: str, lease_s: float) -> Claimed | None:
    row = await conn.fetchrow(UPDATE_CLAIM_NEXT, worker_id, lease_s)
    if row is None:
        return None
    return claimed_from_row(row)


def claimed_from_row(row: asyncpg.Record) -> Claimed:
    """A claim's row (the columns UPDATE_CLAIM_NEXT returns) as a Claimed."""
    return Claimed(
        id=row["id"],
        spec=json.loads(row["spec"]),
        provider=row["provider"],
        model=row["model"],
        attempt=row["attempt"],
        status=Status(row["status"]),
        stage=row["stage"],
        progress=row["progress"],
        cancel_requested=row["cancel_requested"],
        owner=row["owner"],
        created_at=row["created_at"],
        trace_context=json.loads(row["trace_context"]) if row["trace_context"] else None,
        verify=row["verify"],
        stale_owner=row["stale_owner"],
        stale_attempt=row["stale_attempt"],
        silent_s=row["silent_s"],
    )


@dataclass(frozen=True, slots=True)
class QueueClass:
    owner_class: str
    depth: int
    oldest_age_s: float


async def select_queue(conn: Connection) -> list[QueueClass]:
    """What waits for a worker, per owner class (for the queue's metrics)."""
    rows = await conn.fetch(SELECT_QUEUE)
    return [QueueClass(row["owner_class"], row["depth"], row["oldest_age_s"]) for row in rows]


async def renew_leases(
    conn: Connection, worker_id: str, lease_s: float, generation_ids: list[UUID]
) -> set[UUID]:
    """Extend this worker's leases; the ids it still holds (the others were taken over)."""
    rows = await conn.fetch(UPDATE_RENEW_LEASES, worker_id, lease_s, generation_ids)
    return {row["id"] for row in rows}


async def release_leases(conn: Connection, worker_id: str, generation_ids: list[UUID]) -> None:
    await conn.execute(UPDATE_RELEASE_LEASES, worker_id, generation_ids)


async def select_files(conn: Connection, owner: str, generation_id: UUID) -> list[FileInfo]:
    await select_generation(conn, owner, generation_id)
    rows = await conn.fetch(SELECT_FILES, generation_id, owner)
    return [FileInfo(**row) for row in rows]


async def select_file(
    conn: Connection, owner: str, generation_id: UUID, path: str
) -> tuple[str, str]:
    row = await conn.fetchrow(SELECT_FILE, generation_id, owner, path)
    if row is None:
        await select_generation(conn, owner, generation_id)  # the run itself: 404 or 410
        raise NotFound(f"file {path!r} not found in generation {generation_id}")
    if row["redacted_at"] is not None:
        raise _file_redacted(path, row["redacted_at"])
    return row["content"], row["language"]


async def select_file_contents(
    conn: Connection, owner: str, generation_id: UUID
) -> list[tuple[str, str]]:
    """Every file with its content, for the archive."""
    await select_generation(conn, owner, generation_id)
    rows = await conn.fetch(SELECT_FILE_CONTENTS, generation_id, owner)
    for row in rows:
        if row["redacted_at"] is not None:
            raise _file_redacted(row["path"], row["redacted_at"])
    return [(row["path"], row["content"]) for row in rows]


def _file_redacted(path: str, at: datetime) -> Gone:
    return Gone(
        f"the content of {path!r} is gone: retention redacted the run's files "
        f"({retention.REDACT_REASON}); its path, size and sha256 remain",
        at=at,
        reason=retention.REDACT_REASON,
    )


@dataclass(frozen=True, slots=True)
class Stalled:
    """A run swept off a silent worker (``UPDATE_SWEEP_STALLED``)."""

    id: UUID
    attempt: int  # the new one: its generation.stalled is appended with it
    stage: str
    progress: float
    stale_owner: str
    stale_attempt: int
    silent_s: float | None


async def sweep_stalled(conn: Connection) -> list[Stalled]:
    rows = await conn.fetch(UPDATE_SWEEP_STALLED)
    return [Stalled(**{key: row[key] for key in Stalled.__dataclass_fields__}) for row in rows]
