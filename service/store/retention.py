"""All SQL of retention: redacting old runs' bulky payloads, dropping old runs whole, and what
a reader who asks for a dropped run is told.

Redaction keeps each event's skeleton (type, seq, status, stage, progress, message, timestamp,
tokens, durations, the chain hash) and replaces only what makes a log big: the model's text
(``llm.delta``'s ``text``) and a check's output (``check.completed``'s ``output``, and the copies
of the checks inside a verification round's outcome), with ``data.redacted`` saying when, why
and how many characters went. Files keep their path, size and sha256; their content goes.
Everything the analytics views read (types, timestamps, tokens, reasons, errors) stays.

A run is redacted, or dropped, whole and under its row's lock (``FOR UPDATE``), the lock a
retry takes too: a run is never half redacted, half dropped, nor retried while it goes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final
from uuid import UUID

from service.errors import Gone, NotFound
from service.store import partitions
from service.store.db import Connection
from service.store.partitions import Partition

TERMINAL = "('succeeded', 'failed', 'cancelled')"
EARLIEST: Final = datetime.min.replace(tzinfo=UTC)
REDACT_REASON = "retention: the run finished longer ago than this deployment keeps its payloads"

# The marker ($2, JSON: {at, reason}) with the number of characters removed from `chars`.
REDACTED = "$2::jsonb || jsonb_build_object('chars', {chars})"
CHECKS = "e.payload #> '{verification,checks}'"
CHECK_OUTPUTS = f"""(
    SELECT coalesce(sum(length(check_.value ->> 'output')), 0)
    FROM jsonb_array_elements({CHECKS}) AS check_
)"""
CHECKS_WITHOUT_OUTPUT = f"""(
    SELECT jsonb_agg(check_.value || '{{"output": ""}}'::jsonb ORDER BY check_.ordinality)
    FROM jsonb_array_elements({CHECKS}) WITH ORDINALITY AS check_
)"""

# The finished runs ($1: finished before) not redacted yet, after keyset ($2, $3), at most
# $4, locked; through generations_unredacted_idx. Left out, for a dry run: what its drops
# only counted, the periods [$5[i], $6[i]) and the runs outside every period
# [$7[i], $8[i]) that finished before $9.
SELECT_TO_REDACT = f"""
SELECT id, finished_at
FROM generations
WHERE redacted_at IS NULL
  AND finished_at IS NOT NULL
  AND finished_at < $1
  AND NOT EXISTS (
      SELECT
      FROM unnest($5::uuid[], $6::uuid[]) AS dropped(low, high)
      WHERE id >= dropped.low AND id < dropped.high
  )
  AND NOT (
      finished_at < $9
      AND NOT EXISTS (
          SELECT
          FROM unnest($7::uuid[], $8::uuid[]) AS period(low, high)
          WHERE id >= period.low AND id < period.high
      )
  )
  AND status IN {TERMINAL}
  AND (finished_at, id) > ($2, $3)
ORDER BY finished_at, id
LIMIT $4
FOR UPDATE SKIP LOCKED
"""

# The events of runs $1 (uuid[]) with something to redact, and how many characters that is.
REDACTABLE_EVENTS = """
e.generation_id = ANY($1::uuid[])
      AND e.redacted_at IS NULL
      AND (
          (e.type = 'llm.delta' AND e.payload ->> 'text' <> '')
          OR (e.type = 'check.completed' AND e.payload ->> 'output' <> '')
          OR (
              e.type IN ('phase.completed', 'generation.succeeded', 'generation.failed')
              AND jsonb_path_exists(e.payload, '$.verification.checks[*] ? (@.output != "")')
          )
      )"""
BULK_CHARS = f"""CASE e.type
        WHEN 'llm.delta' THEN length(e.payload ->> 'text')
        WHEN 'check.completed' THEN length(e.payload ->> 'output')
        ELSE {CHECK_OUTPUTS}
    END"""

# Redact the events of runs $1 (uuid[]) not redacted yet, marker $2, at $3; returns how many
# and the characters removed.
REDACT_EVENTS = f"""
WITH redacted AS (
    UPDATE generation_events AS e
    SET payload = CASE
            WHEN e.type = 'llm.delta' THEN e.payload || jsonb_build_object(
                'text', '', 'redacted', {REDACTED.format(chars="length(e.payload ->> 'text')")})
            WHEN e.type = 'check.completed' THEN e.payload || jsonb_build_object(
                'output', '',
                'redacted', {REDACTED.format(chars="length(e.payload ->> 'output')")})
            ELSE jsonb_set(e.payload, '{{verification,checks}}', {CHECKS_WITHOUT_OUTPUT})
                || jsonb_build_object('redacted', {REDACTED.format(chars=CHECK_OUTPUTS)})
        END,
        redacted_at = $3
    WHERE {REDACTABLE_EVENTS}
    RETURNING (e.payload -> 'redacted' ->> 'chars')::bigint AS chars
)
SELECT count(*) AS events, coalesce(sum(chars), 0)::bigint AS chars FROM redacted
"""

# Empty the files of runs $1, at $2; returns how many and the characters removed.
REDACT_FILES = """
WITH redacted AS (
    UPDATE generated_files AS f
    SET content = '', redacted_at = $2
    FROM (
        SELECT generation_id, path, length(content) AS chars
        FROM generated_files
        WHERE generation_id = ANY($1::uuid[])
          AND redacted_at IS NULL
    ) AS before
    WHERE f.generation_id = before.generation_id
      AND f.path = before.path
    RETURNING before.chars
)
SELECT count(*) AS files, coalesce(sum(chars), 0)::bigint AS chars FROM redacted
"""

# What REDACT_EVENTS and REDACT_FILES would do to runs $1, for a dry run: nothing written.
COUNT_REDACTABLE_EVENTS = f"""
SELECT count(*) AS events, coalesce(sum({BULK_CHARS}), 0)::bigint AS chars
FROM generation_events AS e
WHERE {REDACTABLE_EVENTS}
"""
COUNT_REDACTABLE_FILES = """
SELECT count(*) AS files, coalesce(sum(length(content)), 0)::bigint AS chars
FROM generated_files
WHERE generation_id = ANY($1::uuid[])
  AND redacted_at IS NULL
"""

# A dry run's reads: the same rows, unlocked (a lock writes to the row, and WAL).
PEEK_TO_REDACT = SELECT_TO_REDACT.replace("FOR UPDATE SKIP LOCKED", "")

MARK_REDACTED = "UPDATE generations SET redacted_at = $2 WHERE id = ANY($1::uuid[])"

# The finished runs ($1: finished before) with ids in [$2, $3) but in none of the ranges
# [$7[i], $8[i]) (periods already dropped whole), after keyset ($4, $5), at most $6, locked:
# each is dropped whole.
SELECT_TO_DROP = f"""
SELECT id, owner, last_seq, finished_at
FROM generations
WHERE finished_at IS NOT NULL
  AND finished_at < $1
  AND status IN {TERMINAL}
  AND id >= $2
  AND id < $3
  AND (finished_at, id) > ($4, $5)
  AND NOT EXISTS (
      SELECT
      FROM unnest($7::uuid[], $8::uuid[]) AS skipped(low, high)
      WHERE id >= skipped.low AND id < skipped.high
  )
ORDER BY finished_at, id
LIMIT $6
FOR UPDATE SKIP LOCKED
"""

PEEK_TO_DROP = SELECT_TO_DROP.replace("FOR UPDATE SKIP LOCKED", "")

DELETE_EVENTS = "DELETE FROM generation_events WHERE generation_id = ANY($1::uuid[])"
DELETE_FILES = "DELETE FROM generated_files WHERE generation_id = ANY($1::uuid[])"
DELETE_GENERATIONS = "DELETE FROM generations WHERE id = ANY($1::uuid[])"

# One run dropped by itself: [id, id + 1), its owner's.
INSERT_DROP = """
INSERT INTO retention_drops (low, high, owner, reason, generations, events, dropped_at)
SELECT low, high, owner, $4, 1, events, $5
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $6::bigint[]) AS d(low, high, owner, events)
"""

# Every run of one period, ids in [$1, $2): how many, how many may not go yet (not finished,
# or finished at or after $3), and their events. Read again once the drop holds generations.
PEEK_PERIOD = f"""
WITH period AS (
    SELECT status, finished_at, last_seq
    FROM generations
    WHERE id >= $1
      AND id < $2
)
SELECT
    count(*) AS generations,
    count(*) FILTER (
        WHERE finished_at IS NULL OR finished_at >= $3 OR status NOT IN {TERMINAL}
    ) AS young,
    coalesce(sum(last_seq), 0)::bigint AS events
FROM period
"""

# A period dropped: [low, high) for everyone (the range says when, not who).
INSERT_PERIOD_DROP = """
INSERT INTO retention_drops (low, high, owner, reason, generations, events, dropped_at)
VALUES ($1, $2, NULL, $3, $4, $5, $6)
"""

# Returns how many: more than were locked means a run came in (an import) while the period
# was being dropped, unchecked for age: the drop is undone.
DELETE_PERIOD_RUNS = """
WITH deleted AS (
    DELETE FROM generations
    WHERE id >= $1
      AND id < $2
    RETURNING 1
)
SELECT count(*) FROM deleted
"""

# Held to the end of a period's drop (dropping a detached partition drops its foreign key's
# triggers on generations, which takes this lock anyway): nothing reads or writes generations
# meanwhile, so the drop takes it only once a first look found the period's runs old enough,
# and first of its locks, as a run's transaction takes generations before the log.
LOCK_GENERATIONS = "LOCK TABLE generations IN ACCESS EXCLUSIVE MODE"

# Whether a run ($1) asked for by owner $2 was dropped: alone (low = its id, its owner's),
# through retention_drops_run_idx; or within a dropped period (no owner: the nearest period
# starting at or below it, if it reaches it), through retention_drops_period_idx. Periods
# never overlap, so the nearest one is the only one that can hold it.
SELECT_DROP = """
(
    SELECT dropped_at, reason
    FROM retention_drops
    WHERE low = $1
      AND owner = $2
    LIMIT 1
)
UNION ALL
(
    SELECT dropped_at, reason
    FROM (
        SELECT dropped_at, reason, high
        FROM retention_drops
        WHERE owner IS NULL
          AND low <= $1
        ORDER BY low DESC
        LIMIT 1
    ) AS nearest
    WHERE $1 < nearest.high
)
LIMIT 1
"""


def marker(at: datetime, reason: str) -> str:
    """``data.redacted`` of a redacted event (JSON), before its ``chars`` is added."""
    return json.dumps({"at": at.isoformat(), "reason": reason})


@dataclass(frozen=True, slots=True)
class DryDrops:
    """What a dry run's drops counted (and left in place), for its redaction to leave out: the
    periods dropped whole, and the runs outside ``every_period`` finished before
    ``outside_periods_before``."""

    periods: Sequence[tuple[UUID, UUID]] = ()
    every_period: Sequence[tuple[UUID, UUID]] = ()
    outside_periods_before: datetime = EARLIEST


@dataclass(frozen=True, slots=True)
class Redacted:
    generations: int
    events: int
    files: int
    chars: int  # characters of model text, check output and file content removed


@dataclass(frozen=True, slots=True)
class Dropped:
    generations: int
    events: int


async def redact_batch(
    conn: Connection,
    *,
    finished_before: datetime,
    after: tuple[datetime, UUID],
    limit: int,
    marker: str,
    at: datetime,
    dropped: DryDrops | None = None,
    dry_run: bool = False,
) -> tuple[Redacted, tuple[datetime, UUID] | None]:
    """Redact up to ``limit`` runs finished before ``finished_before`` after the keyset
    ``after`` (in a dry run, none of what its drops took); call inside a transaction (the runs
    stay locked until it ends). Returns what was done and the keyset to go on from (None:
    nothing left). A dry run counts what it would do and writes nothing."""
    dropped = dropped or DryDrops()
    rows = await conn.fetch(
        PEEK_TO_REDACT if dry_run else SELECT_TO_REDACT,
        finished_before,
        *after,
        limit,
        [low for low, _ in dropped.periods],
        [high for _, high in dropped.periods],
        [low for low, _ in dropped.every_period],
        [high for _, high in dropped.every_period],
        dropped.outside_periods_before,
    )
    if not rows:
        return Redacted(0, 0, 0, 0), None
    ids = [row["id"] for row in rows]
    if dry_run:
        events = await conn.fetchrow(COUNT_REDACTABLE_EVENTS, ids)
        files = await conn.fetchrow(COUNT_REDACTABLE_FILES, ids)
    else:
        events = await conn.fetchrow(REDACT_EVENTS, ids, marker, at)
        files = await conn.fetchrow(REDACT_FILES, ids, at)
        await conn.execute(MARK_REDACTED, ids, at)
    assert events is not None  # aggregates always return a row
    assert files is not None
    done = Redacted(
        len(ids), events["events"], files["files"], int(events["chars"]) + int(files["chars"])
    )
    return done, (rows[-1]["finished_at"], rows[-1]["id"])


async def drop_batch(
    conn: Connection,
    *,
    finished_before: datetime,
    within: tuple[UUID, UUID],
    skip: Sequence[tuple[UUID, UUID]] = (),
    after: tuple[datetime, UUID],
    limit: int,
    reason: str,
    at: datetime,
    dry_run: bool = False,
) -> tuple[Dropped, tuple[datetime, UUID] | None]:
    """Delete up to ``limit`` finished runs with ids in ``within`` and outside every ``skip``
    range, each whole (events, files, row) and recorded in ``retention_drops``; call inside a
    transaction. The slow path (each row deleted leaves work for VACUUM), for runs outside
    any droppable period: in the DEFAULT partition (ids made before UUIDv7, or by a clock
    ahead), or in a period a younger run keeps."""
    rows = await conn.fetch(
        PEEK_TO_DROP if dry_run else SELECT_TO_DROP,
        finished_before,
        *within,
        *after,
        limit,
        [low for low, _ in skip],
        [high for _, high in skip],
    )
    if not rows:
        return Dropped(0, 0), None
    ids = [row["id"] for row in rows]
    events = [row["last_seq"] for row in rows]
    if dry_run:  # counted, nothing written
        return Dropped(len(ids), sum(events)), (rows[-1]["finished_at"], rows[-1]["id"])
    await conn.execute(DELETE_EVENTS, ids)
    await conn.execute(DELETE_FILES, ids)
    await conn.execute(DELETE_GENERATIONS, ids)
    await conn.execute(
        INSERT_DROP,
        ids,
        [UUID(int=generation_id.int + 1) for generation_id in ids],
        [row["owner"] for row in rows],
        reason,
        at,
        events,
    )
    return Dropped(len(ids), sum(events)), (rows[-1]["finished_at"], rows[-1]["id"])


async def drop_period(
    conn: Connection,
    period: Sequence[Partition],
    *,
    finished_before: datetime,
    reason: str,
    at: datetime,
    dry_run: bool,
) -> tuple[Dropped, int]:
    """Drop one period, its partition of each table, if every run in it finished before
    ``finished_before``: detached and dropped (no row is deleted from the log, so no VACUUM
    follows), the runs' rows deleted and the range recorded, in the caller's transaction.
    Returns what went (nothing, and the number of runs too young, when the period stays). A
    dry run only counts. ``LockNotAvailableError`` when generations stayed busy for 2 s or
    the log for half of deadlock_timeout (store/partitions.py says why those two waits),
    ``PeriodChanged`` when a run came into the period meanwhile."""
    low, high = period_range(period)
    row = await conn.fetchrow(PEEK_PERIOD, low, high, finished_before)
    assert row is not None  # an aggregate always returns a row
    if row["young"]:
        return Dropped(0, 0), row["young"]
    if not dry_run:
        await conn.execute(partitions.FIRST_LOCK_TIMEOUT)
        await conn.execute(partitions.LOCK_PARTITIONS)
        await conn.execute(LOCK_GENERATIONS)
        row = await conn.fetchrow(PEEK_PERIOD, low, high, finished_before)  # now it holds
        assert row is not None
        if row["young"]:  # a retry reopened one of its runs in between
            return Dropped(0, 0), row["young"]
        await conn.execute(partitions.LOCK_TIMEOUT)  # the detach's locks on the log
        await conn.execute(
            INSERT_PERIOD_DROP, low, high, reason, row["generations"], row["events"], at
        )
        for partition in period:
            await conn.execute(
                f'ALTER TABLE "{partition.table}" DETACH PARTITION "{partition.name}"'
            )
            await conn.execute(f'DROP TABLE "{partition.name}"')
        deleted = await conn.fetchval(DELETE_PERIOD_RUNS, low, high)
        if deleted != row["generations"]:
            raise PeriodChanged(f"{deleted - row['generations']} run(s) came in meanwhile")
    return Dropped(row["generations"], row["events"]), 0


class PeriodChanged(Exception):
    """A run came into a period while it was being dropped: the caller rolls back."""


def period_range(period: Sequence[Partition]) -> tuple[UUID, UUID]:
    """The ids a period's partitions hold: [low, high)."""
    low, high = period[0].lower, period[0].upper
    assert low is not None  # a period, not the DEFAULT partition
    assert high is not None
    return low, high


async def droppable_periods(conn: Connection, created_before: datetime) -> list[list[Partition]]:
    """The periods that end by ``created_before``, oldest first: each as its partitions (one
    per table of the log, matched by range)."""
    by_range: dict[tuple[UUID, UUID], list[Partition]] = {}
    for table in partitions.TABLES:
        for partition in await partitions.select_partitions(conn, table):
            if partition.lower is None or partition.upper is None or partition.ends is None:
                continue
            if partition.ends <= created_before:
                by_range.setdefault((partition.lower, partition.upper), []).append(partition)
    return [by_range[key] for key in sorted(by_range)]


async def missing(conn: Connection, generation_id: UUID, owner: str | None) -> Gone | NotFound:
    """What to raise for a run that is not there: ``Gone`` when retention dropped it (a run
    of the asker's own, or any run of a dropped period), else ``NotFound``."""
    row = await conn.fetchrow(SELECT_DROP, generation_id, owner)
    if row is None:
        return NotFound(f"generation {generation_id} not found")
    return Gone(
        f"generation {generation_id} is gone: retention dropped it ({row['reason']}); "
        "nothing of it remains",
        at=row["dropped_at"],
        reason=row["reason"],
    )
