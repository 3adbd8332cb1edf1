"""All SQL of the event log: append, read, and the generation's head. Nothing else writes events.

Ordering, in one place:

* ``append`` is ONE statement (so one transaction). Its first step is an UPDATE of the
  generation's row, which takes that row's lock and bumps ``last_seq`` by the batch size; the
  events get ``old last_seq + 1 .. new last_seq``. A concurrent append to the same generation
  blocks on the row lock until we commit, then re-reads the row (READ COMMITTED re-evaluates an
  UPDATE against the newest committed version), so it numbers its batch after ours. Hence seq
  grows by exactly one per event, and commit order equals seq order: a reader that sees seq N
  committed has already been able to see every seq below N.
* The UPDATE refuses generations that are already terminal, so nothing is ever appended after
  the terminal event, whichever process tries.
* Fencing: a worker passes the attempt it was granted when it claimed the run; the UPDATE only
  matches while the row still carries that attempt. A worker that paused past its lease and
  woke after another claimed the run cannot write a single event.
* Idempotency: a worker gives every event a key, unique per generation. An append retried after
  its COMMIT outcome was unknown hits that unique index and is recognised as already stored:
  the batch is atomic, so one stored key means the whole batch is.
* ``pg_notify`` is called in the same statement, so the wake-up is delivered on commit and
  never for a rolled-back append. Its payload is ``<generation id>:<last seq>`` (tiny; NOTIFY
  caps payloads at 8000 bytes), never the event body: listeners re-read the table.
* Every statement that adds events to a run that may be followed NOTIFYs: a stream opening
  at a run's head may start following it there without reading, trusting that whatever is
  committed after its read of the head is announced (``Hub.subscribe``). (Imports make new
  runs, which nobody follows yet.)
* Writing the append as one statement rather than BEGIN/INSERT/NOTIFY/COMMIT halves the round
  trips; measured here, it doubles one writer's throughput.
* ``append_many`` is the same for many generations in ONE statement, so one commit: every
  point above holds for each of its appends (each its own row lock, fence, keys and NOTIFY).
  A transaction that NOTIFYs holds PostgreSQL's database-wide notify lock through its commit's
  WAL flush, so notifying commits never share a flush; one commit for many appends is the
  only way many writers share one (generation/appender.py sends what arrives together so).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias
from uuid import UUID

import asyncpg

from service.errors import GenerationFinished, Gone, LeaseLost, NotFound, StoreUnavailable
from service.events import TERMINAL_TYPES, EventType, NewEvent, NewFile, Status
from service.observe import metrics, traces
from service.store import retention
from service.store.db import Connection
from service.store.keys import KEY_OWNER_COLUMNS, LIVE, KeyOwner, key_owner
from service.store.sql import numbered

EVENTS_CHANNEL = "genstream_events"
NIL_UUID = UUID(int=0)
ZERO_HASH = "\\x" + "00" * 32  # the chain "before" seq 1, as a bytea literal
TERMINAL_SQL = ", ".join(f"'{kind.value}'" for kind in sorted(TERMINAL_TYPES))


# An event as clients see it, without its chain hash: a select-list expression over columns
# named as generation_events' (a row of it, or of the append's own CTE). Rendered by PostgreSQL
# so the stream passes text straight through (decoding and re-encoding JSON in Python costs ~5x
# the read itself). Built from pieces in the contract's key order; every column is NOT NULL
# and every text goes through to_json() for escaping. This is the text each event's chain
# hash covers: changing it changes every hash (migration 0009 froze the same text).
TIMESTAMP_TEXT = """to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_BODY_PIECES = (
    """'{"generation_id":"'""",
    "generation_id::text",
    """'","seq":'""",
    "seq::text",
    """',"type":'""",
    "to_json(type)::text",
    """',"status":'""",
    "to_json(status)::text",
    """',"stage":'""",
    "to_json(stage)::text",
    """',"progress":'""",
    "progress::text",
    """',"message":'""",
    "to_json(message)::text",
    """',"timestamp":"'""",
    TIMESTAMP_TEXT,
    """'","data":'""",
    "payload::text",
)
EVENT_BODY = "\n    || ".join((*_BODY_PIECES, "'}'"))

# An event as clients see it: the body with its chain hash as the last member, so that a
# reader can recompute it from the text it received (drop the member, hash the rest). One
# concat() of the same pieces rather than the body's chain of ||: each || copies the text so
# far, and the reads render every event they send (a catch-up read 1.3x as fast). Equal to
# the body's text for every stored row: concat() only differs on NULLs, and no column of
# generation_events holds one. Stored rows only: over an outer join or a CTE a NULL would render
# as invalid JSON ("stage":,) where || gives NULL.
EVENT_JSON = (
    "concat(\n    "
    + ",\n    ".join((*_BODY_PIECES, """',"chain":"'""", "encode(chain, 'hex')", """'"}'"""))
    + "\n)"
)


# The chain of a batch, in the pieces INSERT_EVENTS and APPEND_MANY share, so that both write
# the same text and hashes. Each names the same things: ``generation``, the CTE of the rows the
# append's UPDATE advanced (id, base_seq: the last seq before the batch); ``chained``, the
# recursive CTE (c_seq, c_hash: the event before); ``b``, the batch's next event, and ``g``,
# its generation's row.

# The hash before a batch's first event: the stored event's at base_seq (zeros before seq 1),
# looked up per generation, so a prepared plan prunes it to the run's partition at run time.
CHAIN_BEFORE = f"""coalesce(
            (SELECT last.chain
             FROM generation_events AS last
             WHERE last.generation_id = generation.id
               AND last.seq = generation.base_seq),
            '{ZERO_HASH}'::bytea
        )"""

# The next event's columns, named as generation_events' so that EVENT_BODY renders them. A
# terminal event's data gets the count and the chain hash of every event before it.
NEXT_EVENT = f"""b.ord,
            chained.c_seq + 1 AS seq,
            g.id AS generation_id,
            b.type,
            b.status,
            b.stage,
            b.progress,
            b.message,
            CASE
                WHEN b.type IN ({TERMINAL_SQL}) THEN b.payload || jsonb_build_object(
                    'count', chained.c_seq + 1, 'chain_hash', encode(chained.c_hash, 'hex'))
                ELSE b.payload
            END AS payload,
            clock_timestamp() AS created_at,
            b.key"""

# The next event's chain hash: the one before it, then its text (``e``: NEXT_EVENT's row).
NEXT_CHAIN = f"sha256(chained.c_hash || convert_to({EVENT_BODY}, 'UTF8'))"

# The rows ``chained`` made, stored (FROM, joining ``generation`` to them, follows).
INSERT_CHAINED = """INSERT INTO generation_events
        (generation_id, seq, type, status, stage, progress, message, payload, created_at,
         idempotency_key, chain, owner)
    SELECT
        generation.id, c_seq, c_type, c_status, c_stage, c_progress, c_message, c_payload,
        c_at, c_key, c_hash, generation.owner"""

# The batch's files (``f``: the unnested file arrays, ``ord`` the place of the file.saved
# event that names each), stored with that event's seq; FROM follows, then FILE_REPLACED.
INSERT_FILES = """INSERT INTO generated_files
        (generation_id, path, content, size, sha256, language, seq)
    SELECT
        generation.id, f.path, f.content, f.size, f.sha256, f.language,
        generation.base_seq + f.ord"""

# A path saved again replaces the file: the newest content is the file.
FILE_REPLACED = """ON CONFLICT (generation_id, path) DO UPDATE
    SET content = excluded.content,
        size = excluded.size,
        sha256 = excluded.sha256,
        language = excluded.language,
        seq = excluded.seq,
        created_at = clock_timestamp()"""


class AppendParameters(NamedTuple):
    """INSERT_EVENTS' parameters, one batch for one generation, checked (``prepare``); also
    what APPEND_MANY takes of each of its appends. The field order is the ``$n`` numbering
    (see ``sql.py``)."""

    generation_id: UUID
    # The generation row after the batch: its last event's status, stage, progress, message.
    status: str
    stage: str
    progress: float
    message: str
    error: str | None  # a generation.failed's data.error; None keeps the row's error
    finished: bool  # the batch ends with a terminal event
    fence: int | None  # the attempt the writer holds; None: no fencing
    # One element per event, in batch order.
    event_types: list[str]
    event_statuses: list[str]
    event_stages: list[str]
    event_progresses: list[float]
    event_messages: list[str]
    event_payloads: list[str]  # JSON text
    event_keys: list[str | None]  # idempotency keys
    # One element per file.
    file_paths: list[str]
    file_contents: list[str]
    file_sizes: list[int]
    file_sha256s: list[str]
    file_languages: list[str]
    file_ordinals: list[int]  # the batch position of the file.saved event that names the file


# Append a batch, advance the generation's row, NOTIFY; returns the new last seq (none: refused).
INSERT_EVENTS = numbered(
    f"""
WITH RECURSIVE generation AS (
    UPDATE generations
    SET last_seq = last_seq + cardinality(:event_types::text[]),
        status = :status,
        stage = :stage,
        progress = :progress,
        message = :message,
        error = coalesce(:error, error),
        started_at = CASE
            WHEN started_at IS NULL AND :status <> 'queued' THEN clock_timestamp()
            ELSE started_at
        END,
        finished_at = CASE WHEN :finished THEN clock_timestamp() END,
        updated_at = clock_timestamp()
    WHERE id = :generation_id
      AND status NOT IN ('succeeded', 'failed', 'cancelled')
      AND (:fence::int IS NULL OR attempt = :fence)
    RETURNING
        id,
        owner,
        last_seq - cardinality(:event_types::text[]) AS base_seq,
        last_seq,
        cancel_requested_at IS NOT NULL AS cancel_requested
),
batch AS (
    SELECT *
    FROM unnest(
        :event_types::text[],
        :event_statuses::text[],
        :event_stages::text[],
        :event_progresses::float8[],
        :event_messages::text[],
        :event_payloads::jsonb[],
        :event_keys::text[]
    ) WITH ORDINALITY AS b(type, status, stage, progress, message, payload, key, ord)
),
-- Each event in batch order with its chain hash, from the last stored event's (zeros before
-- seq 1). Recursive because each hash needs the one before; a terminal event's data gets the
-- count and the chain hash of every event before it. The columns of ``e`` are named as
-- generation_events' so EVENT_BODY renders them; the CTE's own are prefixed to stay apart.
chained(c_ord, c_seq, c_type, c_status, c_stage, c_progress, c_message, c_payload, c_at,
        c_key, c_hash) AS (
    SELECT
        0::bigint, generation.base_seq, NULL::text, NULL::text, NULL::text, NULL::float8,
        NULL::text, NULL::jsonb, NULL::timestamptz, NULL::text,
        {CHAIN_BEFORE}
    FROM generation
    UNION ALL
    SELECT
        e.ord, e.seq, e.type, e.status, e.stage, e.progress, e.message, e.payload,
        e.created_at, e.key,
        {NEXT_CHAIN}
    FROM chained
    CROSS JOIN LATERAL (
        SELECT
            {NEXT_EVENT}
        FROM batch AS b
        CROSS JOIN generation AS g
        WHERE b.ord = chained.c_ord + 1
    ) AS e
),
inserted_events AS (
    {INSERT_CHAINED}
    FROM generation
    CROSS JOIN chained
    WHERE c_ord > 0
),
saved_files AS (
    {INSERT_FILES}
    FROM generation
    CROSS JOIN unnest(
        :file_paths::text[],
        :file_contents::text[],
        :file_sizes::int[],
        :file_sha256s::text[],
        :file_languages::text[],
        :file_ordinals::int[]
    ) AS f(path, content, size, sha256, language, ord)
    {FILE_REPLACED}
)
SELECT
    generation.last_seq,
    generation.cancel_requested,
    pg_notify('{EVENTS_CHANNEL}', generation.id::text || ':' || generation.last_seq::text)
FROM generation
""",
    AppendParameters._fields,
)

# How long a statement of the appender waits for a run's row (set for its own transaction, by
# the first row it reads, so before any lock wait): a row held for long (an operator's open
# transaction, a repair) must cost the other runs of the process a moment, not the 60 s of
# ``command_timeout``; the append that met it goes on alone, without it. Once every row is
# locked the statement sets it back to none (``_UNBOUNDED``): the waits after (a partition
# being made, and at COMMIT the notify lock, held through every NOTIFYing commit's WAL flush)
# are no held row, and a slow disk must not fail a group that has done all its work.
BRIEF_LOCK_TIMEOUT = "1s"
_BRIEFLY = f"set_config('lock_timeout', '{BRIEF_LOCK_TIMEOUT}', true) IS NOT NULL"
_UNBOUNDED = "set_config('lock_timeout', '0', true) AS lock_timeout"

# INSERT_EVENTS that gives up on its row lock after BRIEF_LOCK_TIMEOUT (LockNotAvailableError);
# the final SELECT reads the UPDATE's row, so it runs once the row is locked.
INSERT_EVENTS_BRIEFLY = INSERT_EVENTS.replace(
    "      AND status NOT IN ('succeeded', 'failed', 'cancelled')\n",
    f"      AND status NOT IN ('succeeded', 'failed', 'cancelled')\n      AND {_BRIEFLY}\n",
    1,
).replace(
    "    generation.cancel_requested,\n    pg_notify(",
    f"    generation.cancel_requested,\n    {_UNBOUNDED},\n    pg_notify(",
    1,
)
assert INSERT_EVENTS_BRIEFLY.count("set_config") == 2


class ManyParameters(NamedTuple):
    """APPEND_MANY's parameters: its appends' AppendParameters laid end to end; a file is
    tagged with its append's place (``member``, from 1). The field order is the ``$n``
    numbering (see ``sql.py``)."""

    # One element per append, in the order given; no generation twice.
    generation_ids: list[UUID]
    statuses: list[str]
    stages: list[str]
    progresses: list[float]
    messages: list[str]
    errors: list[str | None]
    finished: list[bool]
    fences: list[int | None]
    event_counts: list[int]
    # One element per event, as in AppendParameters: the first append's events, then the
    # second's, and so on.
    event_types: list[str]
    event_statuses: list[str]
    event_stages: list[str]
    event_progresses: list[float]
    event_messages: list[str]
    event_payloads: list[str]
    event_keys: list[str | None]
    # One element per file: its append's place, and the rest as in AppendParameters.
    file_members: list[int]
    file_paths: list[str]
    file_contents: list[str]
    file_sizes: list[int]
    file_sha256s: list[str]
    file_languages: list[str]
    file_ordinals: list[int]


# INSERT_EVENTS for many generations in one statement, so in one transaction and one commit
# (group commit: see generation/appender.py). Each append is what INSERT_EVENTS does alone:
# its generation's row UPDATEd (fence and terminal refusal per row: a refused one is left out
# of ``generation`` and so writes nothing), its events numbered from the row's last_seq, its
# chain, its files, and a NOTIFY of its own. The recursive CTE advances every generation's
# chain by one event per step. Returns one row per append stored: its place, its new last
# seq, whether a cancel was asked; an append missing from the result was refused.
APPEND_MANY = numbered(
    f"""
WITH RECURSIVE member AS (
    SELECT
        m.*,
        (sum(m.events) OVER (ORDER BY m.member) - m.events)::int AS first
    FROM unnest(
        :generation_ids::uuid[],
        :statuses::text[],
        :stages::text[],
        :progresses::float8[],
        :messages::text[],
        :errors::text[],
        :finished::bool[],
        :fences::int[],
        :event_counts::int[]
    ) WITH ORDINALITY AS m(id, status, stage, progress, message, error, finished, fence,
                           events, member)
),
-- The rows locked in id order before any is updated, as every statement that updates many
-- runs' rows does (generations.UPDATE_RENEW_LEASES): an UPDATE alone locks in its plan's
-- order (the members' order through an index, the table's through a scan), and a lease
-- renewal of the same runs locking in another order could deadlock with the group. A row
-- held elsewhere is waited for BRIEF_LOCK_TIMEOUT at most (the appender then sends each
-- append alone).
locked AS (
    SELECT id
    FROM generations
    WHERE id = ANY(:generation_ids::uuid[])
      AND {_BRIEFLY}
    ORDER BY id
    FOR UPDATE
),
generation AS (
    UPDATE generations AS g
    SET last_seq = g.last_seq + m.events,
        status = m.status,
        stage = m.stage,
        progress = m.progress,
        message = m.message,
        error = coalesce(m.error, g.error),
        started_at = CASE
            WHEN g.started_at IS NULL AND m.status <> 'queued' THEN clock_timestamp()
            ELSE g.started_at
        END,
        finished_at = CASE WHEN m.finished THEN clock_timestamp() END,
        updated_at = clock_timestamp()
    FROM member AS m
    JOIN locked ON locked.id = m.id
    WHERE g.id = m.id
      AND g.status NOT IN ('succeeded', 'failed', 'cancelled')
      AND (m.fence IS NULL OR g.attempt = m.fence)
    RETURNING
        m.member,
        m.first,
        m.events,
        g.id,
        g.owner,
        g.last_seq - m.events AS base_seq,
        g.last_seq,
        g.cancel_requested_at IS NOT NULL AS cancel_requested
),
-- The events of every generation in batch order with their chain hashes, each chain one
-- event further per step. A step reads its events from the event arrays by place (the events
-- of an append lie from its ``first`` on): a join of the steps with a table of the events is
-- planned as a nested loop, one pass over all the events of the group per event.
chained(c_member, c_ord, c_seq, c_type, c_status, c_stage, c_progress, c_message, c_payload,
        c_at, c_key, c_hash) AS (
    SELECT
        generation.member, 0::bigint, generation.base_seq, NULL::text, NULL::text, NULL::text,
        NULL::float8, NULL::text, NULL::jsonb, NULL::timestamptz, NULL::text,
        {CHAIN_BEFORE}
    FROM generation
    UNION ALL
    SELECT
        chained.c_member, e.ord, e.seq, e.type, e.status, e.stage, e.progress, e.message,
        e.payload, e.created_at, e.key,
        {NEXT_CHAIN}
    FROM chained
    JOIN generation AS g ON g.member = chained.c_member
    CROSS JOIN LATERAL (
        SELECT
            {NEXT_EVENT}
        FROM (
            SELECT
                chained.c_ord + 1 AS ord,
                (:event_types::text[])[g.first + chained.c_ord::int + 1] AS type,
                (:event_statuses::text[])[g.first + chained.c_ord::int + 1] AS status,
                (:event_stages::text[])[g.first + chained.c_ord::int + 1] AS stage,
                (:event_progresses::float8[])[g.first + chained.c_ord::int + 1] AS progress,
                (:event_messages::text[])[g.first + chained.c_ord::int + 1] AS message,
                (:event_payloads::jsonb[])[g.first + chained.c_ord::int + 1] AS payload,
                (:event_keys::text[])[g.first + chained.c_ord::int + 1] AS key
        ) AS b
    ) AS e
    WHERE chained.c_ord < g.events
),
inserted_events AS (
    {INSERT_CHAINED}
    FROM generation
    JOIN chained ON chained.c_member = generation.member
    WHERE c_ord > 0
),
saved_files AS (
    {INSERT_FILES}
    FROM generation
    JOIN unnest(
        :file_members::int[],
        :file_paths::text[],
        :file_contents::text[],
        :file_sizes::int[],
        :file_sha256s::text[],
        :file_languages::text[],
        :file_ordinals::int[]
    ) AS f(member, path, content, size, sha256, language, ord)
        ON f.member = generation.member
    {FILE_REPLACED}
)
SELECT
    generation.member,
    generation.last_seq,
    generation.cancel_requested,
    -- Every row of ``locked`` read (so locked) before the timeout goes: see _UNBOUNDED.
    set_config(
        'lock_timeout', (SELECT '0' FROM (SELECT count(*) FROM locked) AS all_locked), true
    ) AS lock_timeout,
    pg_notify('{EVENTS_CHANNEL}', generation.id::text || ':' || generation.last_seq::text)
FROM generation
""",
    ManyParameters._fields,
)

# Each given generation's last seq ($1: ids; unknown ids are left out).
SELECT_LAST_SEQS = """
SELECT
    id,
    last_seq
FROM generations
WHERE id = ANY($1::uuid[])
"""

# Of pairs (id $1[i], seq seen $2[i]), the ids of the generations whose last seq is past it.
SELECT_GENERATIONS_AHEAD = """
SELECT g.id
FROM unnest($1::uuid[], $2::bigint[]) AS seen(id, last_seq)
JOIN generations AS g ON g.id = seen.id
WHERE g.last_seq > seen.last_seq
"""

# A generation's head ($1: id): where its row stands, its attempt, whether cancel was asked.
HEAD_COLUMNS = """
    status,
    stage,
    progress,
    last_seq,
    attempt,
    cancel_requested_at IS NOT NULL AS cancel_requested
"""

SELECT_GENERATION_HEAD = f"""
SELECT {HEAD_COLUMNS}
FROM generations
WHERE id = $1
"""

# The head of an owner's ($2) run: a stream opened with a key checks whose run it is and reads
# where it stands in one round trip (someone else's run is as missing as a dropped one).
SELECT_OWNED_HEAD = f"""
SELECT {HEAD_COLUMNS}
FROM generations
WHERE id = $1
  AND owner = $2
"""

# A stream token's key, if live, and its run's head (``select_key_and_head``).
SELECT_KEY_AND_HEAD = f"""
SELECT key.*, head.*
FROM (VALUES (1)) AS one
LEFT JOIN LATERAL (
    SELECT {KEY_OWNER_COLUMNS}
    FROM api_keys
    WHERE id = $1
      AND {LIVE}
) AS key ON true
LEFT JOIN LATERAL (
    SELECT {HEAD_COLUMNS}
    FROM generations
    WHERE id = $2
) AS head ON true
"""

# The unique index of idempotency keys. A violation names the partition's own index, which
# PostgreSQL names after the partition (generation_events_default_idempotency_key_idx,
# generation_events_p20261201_generation_id_idempotency_key_idx): all end alike.
IDEMPOTENCY_INDEX = "generation_events_idempotency_key_idx"
IDEMPOTENCY_INDEX_SUFFIX = "idempotency_key_idx"

# Whether a run ($1: generation id) has started, and its completed stages in order. After a
# generation.retried, building phases completed before it stay completed, verification starts
# again (its rounds and repairs count from the retry), and so does the worker attempts' budget.
SELECT_RUN_STATE = """
WITH milestones AS (
    SELECT seq, type, stage, payload
    FROM generation_events
    WHERE generation_id = $1
      AND type IN ('generation.started', 'phase.completed', 'generation.retried')
),
retried AS (
    SELECT
        coalesce(max(seq), 0) AS seq,
        coalesce((array_agg((payload ->> 'attempt')::int ORDER BY seq DESC))[1], 0) AS attempt
    FROM milestones
    WHERE type = 'generation.retried'
)
SELECT
    array_agg(m.stage ORDER BY m.seq) FILTER (
        WHERE m.type = 'phase.completed' AND (m.stage NOT IN ('verify', 'repair') OR m.seq > r.seq)
    ) AS completed,
    bool_or(m.type = 'generation.started') AS started,
    (array_agg(m.payload -> 'verification' ORDER BY m.seq DESC) FILTER (
        WHERE m.type = 'phase.completed' AND m.stage = 'verify' AND m.seq > r.seq
    ))[1]::text AS verification,
    max(r.attempt) AS attempt_base
FROM milestones AS m
CROSS JOIN retried AS r
"""

# The first break in each chain ($1: generation ids; NULL: every generation). Each event's
# hash is recomputed from its own text and the STORED hash before it, so an edit is found at
# the event edited (the next one still holds); a deleted event shows as a gap in seq, a
# deleted tail as a log that ends before the row's last_seq.
SELECT_CHAIN_BREAKS = f"""
WITH checked AS (
    SELECT
        generation_id,
        seq,
        lag(seq, 1, 0::bigint) OVER by_seq AS previous_seq,
        -- A redacted event's text changed after it was hashed: its link is taken on trust
        -- (store/retention.py); the links after it are still checked from its stored hash.
        redacted_at IS NOT NULL OR chain = sha256(
            coalesce(lag(chain) OVER by_seq, '{ZERO_HASH}'::bytea)
            || convert_to({EVENT_BODY}, 'UTF8')
        ) AS holds
    FROM generation_events
    WHERE $1::uuid[] IS NULL OR generation_id = ANY($1::uuid[])
    WINDOW by_seq AS (PARTITION BY generation_id ORDER BY seq)
),
breaks AS (
    SELECT generation_id, previous_seq + 1 AS seq, 'missing' AS kind, seq AS other_seq
    FROM checked
    WHERE seq <> previous_seq + 1
    UNION ALL
    SELECT generation_id, seq, 'altered', NULL
    FROM checked
    WHERE seq = previous_seq + 1
      AND NOT holds
    UNION ALL
    SELECT g.id, coalesce(tail.last_seq, 0) + 1, 'truncated', g.last_seq
    FROM generations AS g
    LEFT JOIN (
        SELECT generation_id, max(seq) AS last_seq
        FROM checked
        GROUP BY generation_id
    ) AS tail ON tail.generation_id = g.id
    WHERE ($1::uuid[] IS NULL OR g.id = ANY($1::uuid[]))
      AND coalesce(tail.last_seq, 0) < g.last_seq
)
SELECT DISTINCT ON (generation_id)
    generation_id,
    seq,
    kind,
    other_seq
FROM breaks
ORDER BY generation_id, seq
"""

# Hash the chain of generation $1 from seq 1, if none of its events has one yet (an import of
# an export made before migration 0009 stores the zero hash in their place).
UPDATE_UNCHAINED = f"""
WITH RECURSIVE chained(c_seq, c_hash) AS (
    SELECT 0::bigint, '{ZERO_HASH}'::bytea
    UNION ALL
    SELECT seq, sha256(c_hash || convert_to({EVENT_BODY}, 'UTF8'))
    FROM chained
    JOIN generation_events
        ON generation_id = $1
        AND seq = c_seq + 1
)
UPDATE generation_events AS t
SET chain = c_hash
FROM chained
WHERE t.generation_id = $1
  AND t.seq = c_seq
  AND c_seq > 0
  AND NOT EXISTS (
      SELECT 1
      FROM generation_events AS hashed
      WHERE hashed.generation_id = $1
        AND hashed.chain <> '{ZERO_HASH}'::bytea
  )
"""

# How many generations and events a chain check covers ($1 as in SELECT_CHAIN_BREAKS).
SELECT_CHAIN_EXTENT = """
SELECT
    count(DISTINCT generation_id) AS generations,
    count(*) AS events,
    count(redacted_at) AS redacted
FROM generation_events
WHERE $1::uuid[] IS NULL OR generation_id = ANY($1::uuid[])
"""

# A run's files ($1: generation id), path and content, in the order they were saved.
SELECT_RUN_FILES = """
SELECT path, content
FROM generated_files
WHERE generation_id = $1
ORDER BY seq, path
"""

# One page of a generation's events ($1: id) after seq $2, at most $3, as clients see them.
SELECT_EVENTS_AFTER = f"""
SELECT
    seq,
    type,
    {EVENT_JSON} AS json,
    date_part('epoch', created_at) AS at  -- float8 (extract's numeric is slower)
FROM generation_events
WHERE generation_id = $1
  AND seq > $2
ORDER BY seq
LIMIT $3
"""

# One page of the global feed after position ($1, $2, $3), at most $4, as clients see them.
# Only events whose transaction is older than every transaction still running, so none can
# commit behind the cursor later (see migration 0003); paged by (transaction, generation, seq)
# on generation_events_feed_idx.
SELECT_FEED = f"""
SELECT
    tx_id,
    generation_id,
    seq,
    {EVENT_JSON} AS json
FROM generation_events
WHERE tx_id < pg_snapshot_xmin(pg_current_snapshot())::text::bigint
  AND (tx_id, generation_id, seq) > ($1, $2, $3)
ORDER BY tx_id, generation_id, seq
LIMIT $4
"""


@dataclass(frozen=True, slots=True)
class Appended:
    last_seq: int
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One event as stored: ``json`` is the exact text clients receive."""

    seq: int
    type: str
    json: str
    at: float = 0.0  # unix seconds of its append (the row's created_at): for delivery lag

    @property
    def is_terminal(self) -> bool:
        return self.type in (EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED)


@dataclass(frozen=True, slots=True)
class FeedPosition:
    """Where a reader of the global feed is: after this event (all zero: the start)."""

    tx_id: int = 0
    generation_id: UUID = NIL_UUID
    seq: int = 0


@dataclass(frozen=True, slots=True)
class FeedEvent:
    position: FeedPosition
    json: str


@dataclass(frozen=True, slots=True)
class Head:
    status: Status
    last_seq: int
    attempt: int = 0
    cancel_requested: bool = False
    stage: str = ""
    progress: float = 0.0

    @property
    def is_finished(self) -> bool:
        return self.status in (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)


def _append_parameters(
    generation_id: UUID,
    events: Sequence[NewEvent],
    files: Sequence[NewFile],
    fence: int | None,
    keys: Sequence[str] | None,
) -> AppendParameters:
    """INSERT_EVENTS' parameters for this batch. Each file is paired with the ``file.saved``
    event that names it (by path) in the same batch, whose seq it is stored with."""
    ordinal_by_path = {
        str(event.data.get("path")): index
        for index, event in enumerate(events, start=1)
        if event.type is EventType.FILE_SAVED
    }
    for file in files:
        if file.path not in ordinal_by_path:
            raise ValueError(f"file {file.path!r} has no file.saved event in the same batch")
    last = events[-1]
    return AppendParameters(
        generation_id=generation_id,
        status=last.status.value,
        stage=last.stage,
        progress=last.progress,
        message=last.message,
        error=str(last.data.get("error")) if last.type is EventType.FAILED else None,
        finished=last.is_terminal,
        fence=fence,
        event_types=[event.type.value for event in events],
        event_statuses=[event.status.value for event in events],
        event_stages=[event.stage for event in events],
        event_progresses=[event.progress for event in events],
        event_messages=[event.message for event in events],
        event_payloads=[json.dumps(event.data, separators=(",", ":")) for event in events],
        event_keys=list(keys) if keys is not None else [None] * len(events),
        file_paths=[file.path for file in files],
        file_contents=[file.content for file in files],
        file_sizes=[file.size for file in files],
        file_sha256s=[file.sha256 for file in files],
        file_languages=[file.language for file in files],
        file_ordinals=[ordinal_by_path[file.path] for file in files],
    )


def prepare(
    generation_id: UUID,
    events: Sequence[NewEvent],
    files: Sequence[NewFile] = (),
    *,
    fence: int | None = None,
    keys: Sequence[str] | None = None,
) -> AppendParameters:
    """An append checked and rendered for its statement; raises ValueError for a batch the log
    refuses. Done by the writer itself, so that a malformed batch fails there and never takes
    a group of other writers' appends down with it (``append_many``).

    ``fence``: the attempt the writer holds (None: no fencing, for API-side appends).
    ``keys``: one idempotency key per event (None: no keys).
    """
    if not events:
        raise ValueError("append needs at least one event")
    if keys is not None and len(keys) != len(events):
        raise ValueError("one idempotency key per event")
    if any(event.is_terminal for event in events[:-1]):
        raise ValueError("a terminal event can only be the last of a batch")
    return _append_parameters(generation_id, events, files, fence, keys)


async def append(
    conn: Connection,
    generation_id: UUID,
    events: Sequence[NewEvent],
    files: Sequence[NewFile] = (),
    *,
    fence: int | None = None,
    keys: Sequence[str] | None = None,
) -> Appended:
    """Append events (and the files they announce) atomically; see the module docstring and
    ``prepare`` for the arguments."""
    return await append_prepared(
        conn, prepare(generation_id, events, files, fence=fence, keys=keys)
    )


async def append_prepared(
    conn: Connection,
    parameters: AppendParameters,
    *,
    briefly: bool = False,
    traced: bool = True,
) -> Appended:
    """``append`` of a batch already through ``prepare``. ``briefly``: a row held elsewhere
    is waited for ``BRIEF_LOCK_TIMEOUT`` at most (then ``asyncpg.LockNotAvailableError``),
    for the appender's sender. ``traced`` False: no span here (the appender's tasks: the
    writer's own ``append`` span covers it; one here would be a trace of its own)."""
    generation_id = parameters.generation_id
    started = time.perf_counter()
    statement = INSERT_EVENTS_BRIEFLY if briefly else INSERT_EVENTS
    try:
        if not traced:
            row = await conn.fetchrow(statement, *parameters)
        else:
            events = len(parameters.event_types)
            with traces.span("append", generation_id=generation_id, events=events):
                row = await conn.fetchrow(statement, *parameters)
    except asyncpg.UniqueViolationError as exc:
        if not (exc.constraint_name or "").endswith(IDEMPOTENCY_INDEX_SUFFIX):
            raise
        metrics.IDEMPOTENT_REPLAYS.inc()
        head = await select_head(conn, generation_id)
        return Appended(last_seq=head.last_seq, cancel_requested=head.cancel_requested)
    metrics.APPEND_SECONDS.observe(time.perf_counter() - started)
    if row is None:
        raise await _refusal(conn, generation_id, parameters.fence)
    _count_appended(parameters)
    return Appended(last_seq=row["last_seq"], cancel_requested=row["cancel_requested"])


# What ``append_many`` answers for an append it did not store (StoreUnavailable: refused,
# but why could not be read back; a retry with the same keys is told).
Refused: TypeAlias = GenerationFinished | LeaseLost | NotFound | Gone | StoreUnavailable


async def append_many(
    conn: Connection, appends: Sequence[AppendParameters]
) -> list[Appended | Refused]:
    """Many generations' appends (each through ``prepare``) in ONE statement: one transaction,
    one commit, one fsync for all, and for each what ``append`` does alone, its NOTIFY
    included. Returns, in the order given, each append's ``Appended`` or, for an append its
    generation's row refused (fence lost, run finished, run missing), the error ``append``
    would raise: the others are stored all the same.

    Each generation at most once: two batches of one run in one statement would both be
    numbered from the same last_seq, so a caller with a second one sends it in a later
    statement (ValueError here). Anything the statement raises (a batch whose idempotency
    keys are already stored, a deadlock, a bad value) means none of its appends was stored;
    a lost connection, that none or all were. Either way each can be sent again with its
    keys: alone, ``append_prepared`` recognises a stored batch by them.
    """
    if not appends:
        return []
    if len({one.generation_id for one in appends}) != len(appends):
        raise ValueError("append_many takes each generation once: send its next batch after")
    parameters = _many_parameters(appends)
    started = time.perf_counter()
    # No span: a group serves many runs' traces; each writer's ``append`` span covers it.
    rows = await conn.fetch(APPEND_MANY, *parameters)
    seconds = time.perf_counter() - started
    stored = {row["member"]: row for row in rows}
    outcomes: list[Appended | Refused | None] = []
    for member, one in enumerate(appends, start=1):
        metrics.APPEND_SECONDS.observe(seconds)  # each append's statement, as ``append``'s
        if (row := stored.get(member)) is not None:
            _count_appended(one)
            outcomes.append(Appended(row["last_seq"], row["cancel_requested"]))
        else:
            outcomes.append(None)
    # Committed: from here on, an error reading why an append was refused is that append's
    # alone (its writer retries with its keys and is told then), never the group's.
    done: list[Appended | Refused] = []
    for outcome, one in zip(outcomes, appends, strict=True):
        if outcome is not None:
            done.append(outcome)
            continue
        try:
            done.append(await _refusal(conn, one.generation_id, one.fence))
        except (NotFound, Gone) as missing:
            done.append(missing)
        except Exception as exc:
            done.append(StoreUnavailable(f"why the append was refused is unknown: {exc!r}"))
    return done


def _count_appended(parameters: AppendParameters) -> None:
    metrics.NOTIFIES_SENT.inc()
    for event_type in parameters.event_types:
        metrics.EVENTS_APPENDED.labels(event_type).inc()


def _many_parameters(appends: Sequence[AppendParameters]) -> ManyParameters:
    """APPEND_MANY's parameters: the appends' laid end to end, each file with its place."""
    many = ManyParameters(*([] for _ in ManyParameters._fields))
    for member, one in enumerate(appends, start=1):
        count = len(one.event_types)
        many.generation_ids.append(one.generation_id)
        many.statuses.append(one.status)
        many.stages.append(one.stage)
        many.progresses.append(one.progress)
        many.messages.append(one.message)
        many.errors.append(one.error)
        many.finished.append(one.finished)
        many.fences.append(one.fence)
        many.event_counts.append(count)
        many.event_types.extend(one.event_types)
        many.event_statuses.extend(one.event_statuses)
        many.event_stages.extend(one.event_stages)
        many.event_progresses.extend(one.event_progresses)
        many.event_messages.extend(one.event_messages)
        many.event_payloads.extend(one.event_payloads)
        many.event_keys.extend(one.event_keys)
        many.file_members.extend([member] * len(one.file_paths))
        many.file_paths.extend(one.file_paths)
        many.file_contents.extend(one.file_contents)
        many.file_sizes.extend(one.file_sizes)
        many.file_sha256s.extend(one.file_sha256s)
        many.file_languages.extend(one.file_languages)
        many.file_ordinals.extend(one.file_ordinals)
    return many


async def _refusal(
    conn: Connection, generation_id: UUID, fence: int | None
) -> GenerationFinished | LeaseLost:
    """Why a generation's row refused an append, read back from the row (a missing run raises
    ``select_head``'s NotFound or Gone)."""
    head = await select_head(conn, generation_id)
    metrics.APPENDS_FENCED.labels("finished" if head.is_finished else "lease_lost").inc()
    if head.is_finished:
        return GenerationFinished(
            f"generation {generation_id} is {head.status}: nothing can follow its terminal event"
        )
    return LeaseLost(
        f"generation {generation_id} is held by attempt {head.attempt}, not {fence}: "
        "this worker lost its lease"
    )


def parse_notification(payload: str) -> tuple[UUID, int] | None:
    """``<generation id>:<last seq>``, as the append's ``pg_notify`` writes it (None if not)."""
    generation_id, _, last_seq = payload.partition(":")
    if not last_seq.isdigit():
        return None
    try:
        return UUID(generation_id), int(last_seq)
    except ValueError:
        return None


async def select_feed(conn: Connection, after: FeedPosition, limit: int) -> list[FeedEvent]:
    """Every generation's events after ``after``, in an order no later commit can get
    behind: a reader that pages through this never skips an event nor sees one twice."""
    rows = await conn.fetch(SELECT_FEED, after.tx_id, after.generation_id, after.seq, limit)
    return [
        FeedEvent(FeedPosition(row["tx_id"], row["generation_id"], row["seq"]), row["json"])
        for row in rows
    ]


async def select_last_seqs(conn: Connection, generation_ids: list[UUID]) -> dict[UUID, int]:
    """The newest seq of each generation (from its row, kept in step by every append)."""
    rows = await conn.fetch(SELECT_LAST_SEQS, generation_ids)
    return {row["id"]: row["last_seq"] for row in rows}


async def select_generations_ahead(
    conn: Connection, seen: Sequence[tuple[UUID, int]]
) -> list[UUID]:
    """Of ``(generation id, seq seen)`` pairs, the generations whose log has gone further:
    compared in SQL, so that only those few come back."""
    rows = await conn.fetch(
        SELECT_GENERATIONS_AHEAD, [pair[0] for pair in seen], [pair[1] for pair in seen]
    )
    return [row["id"] for row in rows]


async def select_head(conn: Connection, generation_id: UUID, owner: str | None = None) -> Head:
    """The run's head; with ``owner``, only if the run is theirs. A missing run is a 410
    (retention dropped it: its period, or, for its ``owner``, the run alone) or a 404."""
    if owner is None:
        row = await conn.fetchrow(SELECT_GENERATION_HEAD, generation_id)
    else:
        row = await conn.fetchrow(SELECT_OWNED_HEAD, generation_id, owner)
    if row is None:
        raise await retention.missing(conn, generation_id, owner)
    return _head(row)


async def select_key_and_head(
    conn: Connection, key_id: UUID, generation_id: UUID
) -> tuple[KeyOwner, Head] | None:
    """The live key ``key_id`` and the run's head in one round trip (a stream opened with a
    token needs both before it answers, and a reconnect storm opens thousands a second);
    None when the key is revoked, expired or unknown. A missing run raises as in
    ``select_head``."""
    row = await conn.fetchrow(SELECT_KEY_AND_HEAD, key_id, generation_id)
    caller = key_owner(row) if row is not None and row["id"] is not None else None
    if caller is None:
        return None
    assert row is not None  # one row always: both joins are outer
    if row["status"] is None:
        raise await retention.missing(conn, generation_id, caller.owner)
    return caller, _head(row)


def _head(row: asyncpg.Record) -> Head:
    return Head(
        status=Status(row["status"]),
        last_seq=row["last_seq"],
        attempt=row["attempt"],
        cancel_requested=row["cancel_requested"],
        stage=row["stage"],
        progress=row["progress"],
    )


@dataclass(frozen=True, slots=True)
class RunState:
    """Where a run stands, rebuilt from its own log: enough to resume it."""

    started: bool
    completed_stages: tuple[str, ...]
    files: dict[str, str]  # the newest version of each path
    verification: dict[str, Any] | None = None  # the last completed verify round's outcome
    attempt_base: int = 0  # worker attempts before the last generation.retried


async def select_run_state(conn: Connection, generation_id: UUID) -> RunState:
    row = await conn.fetchrow(SELECT_RUN_STATE, generation_id)
    files = await conn.fetch(SELECT_RUN_FILES, generation_id)
    return RunState(
        started=bool(row and row["started"]),
        completed_stages=tuple(row["completed"] or ()) if row else (),
        files={file["path"]: file["content"] for file in files},
        verification=json.loads(row["verification"]) if row and row["verification"] else None,
        attempt_base=int(row["attempt_base"] or 0) if row else 0,
    )


async def select_events_after(
    conn: Connection, generation_id: UUID, after: int, limit: int
) -> list[StoredEvent]:
    """One keyset page: events with ``seq > after`` in order (primary key index scan)."""
    rows = await conn.fetch(SELECT_EVENTS_AFTER, generation_id, after, limit)
    return [StoredEvent(row["seq"], row["type"], row["json"], row["at"]) for row in rows]


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first place a generation's chain does not hold (``SELECT_CHAIN_BREAKS``)."""

    generation_id: UUID
    seq: int
    kind: str  # missing: seq..other_seq-1 are gone; altered: seq's text or hash was changed;
    # truncated: the log ends before seq, the row's last_seq is other_seq
    other_seq: int | None


@dataclass(frozen=True, slots=True)
class ChainCheck:
    generations: int
    events: int
    breaks: list[ChainBreak]
    redacted: int = 0  # events whose link was taken on trust: retention changed their text


async def check_chains(conn: Connection, ids: Sequence[UUID] | None = None) -> ChainCheck:
    """Recompute the chain of the given generations (every one when None); nothing is written."""
    chosen = list(ids) if ids is not None else None
    extent = await conn.fetchrow(SELECT_CHAIN_EXTENT, chosen)
    rows = await conn.fetch(SELECT_CHAIN_BREAKS, chosen)
    assert extent is not None  # an aggregate always returns a row
    return ChainCheck(
        generations=extent["generations"],
        events=extent["events"],
        breaks=[ChainBreak(**dict(row.items())) for row in rows],
        redacted=extent["redacted"],
    )


async def chain_unchained(conn: Connection, generation_id: UUID) -> None:
    """Hash the chain of a generation whose events have none yet (``UPDATE_UNCHAINED``)."""
    await conn.execute(UPDATE_UNCHAINED, generation_id)
