"""genstream as the cases drive it: generations claimed as a worker claims them, appends through
the worker's own ``LogEmitter`` (fenced, with idempotency keys), and ``serve`` subprocesses.

The only SQL of the bench's own outside the bare references is ``CLAIM_BY_ID``: the service's
claim (``generations.UPDATE_CLAIM_NEXT``) for one given generation, because ``claim_next``
takes the oldest claimable run and the bench must not claim anyone else's (``BENCH_DATABASE_URL``
may point at a database with real runs in it).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.asgi import DELTA_TEXT
from bench.processes import ServerProcess
from service.access import keys, tokens
from service.events import EventType, NewEvent
from service.generation.appender import Appender
from service.generation.runner import LogEmitter
from service.generation.runs import queued_event
from service.ids import new_generation_id
from service.store import generations
from service.store.db import Pool, connection, create_pool
from service.store.generations import Claimed

OWNER = "bench"
SPEC: dict[str, Any] = {
    "project": "bench",
    "entities": [{"name": "User", "fields": {"email": "str", "age": "int"}}],
}
LEASE_S = 86_400.0  # nobody else may take over a bench run while a case uses it
TOKEN_TTL_S = 86_400

CLAIM_BY_ID = """
UPDATE generations
SET claimed_by = $1,
    attempt = attempt + 1,
    lease_expires_at = clock_timestamp() + make_interval(secs => $2)
WHERE id = $3
RETURNING id, spec::text AS spec, provider, model, attempt, status, stage, progress,
    cancel_requested_at IS NOT NULL AS cancel_requested, owner,
    extract(epoch FROM created_at)::float8 AS created_at, trace_context::text AS trace_context,
    verify, NULL::text AS stale_owner, NULL::int AS stale_attempt, NULL::float8 AS silent_s
"""

# The bare reference of case 1: the same rows, INSERT + pg_notify as ONE statement, seq counted
# by the writer itself. No generation row to lock and bump, no idempotency keys: what
# PostgreSQL costs for storing these events durably and signalling them, and no more.
BARE_INSERT = """
WITH inserted AS (
    INSERT INTO generation_events
        (generation_id, seq, type, status, stage, progress, message, payload, created_at)
    SELECT $1, $2 + b.ord, b.type, b.status, b.stage, b.progress, b.message, b.payload,
        clock_timestamp()
    FROM unnest($3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::jsonb[])
        WITH ORDINALITY AS b(type, status, stage, progress, message, payload, ord)
    RETURNING seq
)
SELECT pg_notify('genstream_events', $1::text || ':' || max(seq)::text)
FROM inserted
"""

# BARE_INSERT for many generations at once, as a group commit sends it: every writer's batch
# ($3..$8, the same for all) under each generation ($1) from its seq ($2), and one pg_notify
# per generation, all in ONE statement and so one commit.
BARE_GROUP_INSERT = """
WITH inserted AS (
    INSERT INTO generation_events
        (generation_id, seq, type, status, stage, progress, message, payload, created_at)
    SELECT g.id, g.seq + b.ord, b.type, b.status, b.stage, b.progress, b.message, b.payload,
        clock_timestamp()
    FROM unnest($1::uuid[], $2::bigint[]) AS g(id, seq)
    CROSS JOIN unnest($3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::jsonb[])
        WITH ORDINALITY AS b(type, status, stage, progress, message, payload, ord)
    RETURNING generation_id, seq
)
SELECT pg_notify('genstream_events', generation_id::text || ':' || max(seq)::text)
FROM inserted
GROUP BY generation_id
"""

# The bare reference plus what genstream needs most: the seq taken from the generation row
# under its row lock (an UPDATE bumping last_seq), so that seq is gap-free and commit order is
# seq order. No projection, fence or idempotency key: case 1's breakdown of an append's cost.
LOCKED_INSERT = """
WITH generation AS (
    UPDATE generations
    SET last_seq = last_seq + 1
    WHERE id = $1
    RETURNING id, last_seq
),
inserted AS (
    INSERT INTO generation_events
        (generation_id, seq, type, status, stage, progress, message, payload, created_at)
    SELECT generation.id, generation.last_seq, $2, $3, $4, $5, $6, $7::jsonb, clock_timestamp()
    FROM generation
)
SELECT pg_notify('genstream_events', generation.id::text || ':' || generation.last_seq::text)
FROM generation
"""

# Leaving a bare reference's generation as the service would: a terminal event last (stored by
# BARE_INSERT), then the row's status and last_seq to match. Only the bench's own rows.
BARE_FINISH = """
UPDATE generations
SET status = 'succeeded',
    stage = 'done',
    progress = 1,
    message = 'Benchmark finished',
    last_seq = $2,
    finished_at = clock_timestamp(),
    updated_at = clock_timestamp(),
    claimed_by = NULL,
    lease_expires_at = NULL
WHERE id = $1
  AND owner = 'bench'
"""

BARE_KEYSET = """
SELECT generation_id, seq, type, status, stage, progress, message, payload, created_at
FROM generation_events
WHERE generation_id = $1
  AND seq > $2
ORDER BY seq
LIMIT $3
"""


def delta(data: dict[str, Any] | None = None) -> NewEvent:
    """An ``llm.delta`` event as the generator emits them (a line or two of code)."""
    return NewEvent(
        EventType.LLM_DELTA, "models", 0.5, "Writing models", data or {"text": DELTA_TEXT}
    )


async def claimed_generations(pool: Pool, count: int, *, concurrency: int = 8) -> list[Claimed]:
    """``count`` new generations, each created as the API creates them (row + queued event)
    and claimed as a worker claims a run (attempt bumped: the fence its appends carry)."""
    gate = asyncio.Semaphore(concurrency)
    worker_id = f"bench-{uuid4().hex[:8]}"

    async def one() -> Claimed:
        generation_id = new_generation_id()
        async with gate, connection(pool) as conn:
            await generations.insert_generation(
                conn, generation_id, OWNER, SPEC, "offline", None, queued_event()
            )
            row = await conn.fetchrow(CLAIM_BY_ID, worker_id, LEASE_S, generation_id)
        assert row is not None
        return generations.claimed_from_row(row)

    return list(await asyncio.gather(*(one() for _ in range(count))))


def emitters(
    pool: Pool, claims: Sequence[Claimed], appender: Appender | None = None
) -> list[LogEmitter]:
    """A worker's emitters for ``claims``: each on its own connection, or through the
    ``appender`` (group commit) as a worker's runs append."""
    return [
        LogEmitter(pool, claim, retry_s=30.0, stage=claim.stage, appender=appender)
        for claim in claims
    ]


@asynccontextmanager
async def worker_writers(pool: Pool, claims: Sequence[Claimed]) -> AsyncIterator[list[LogEmitter]]:
    """A worker's emitters for ``claims`` through one started ``Appender``, as a ``serve``
    process's runs append (group commit), stopped after."""
    appender = Appender(pool)
    appender.start()
    try:
        yield emitters(pool, claims, appender)
    finally:
        await appender.stop()


def finished() -> NewEvent:
    return NewEvent(EventType.SUCCEEDED, "done", 1.0, "Benchmark finished")


async def finish(writers: Sequence[LogEmitter], *, concurrency: int = 8) -> None:
    """End the bench's runs with a terminal event, through the same path, so that nothing is
    left running (in a shared database a worker would otherwise pick them up one day)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(writer: LogEmitter) -> None:
        async with gate:
            await writer.emit(finished())

    await asyncio.gather(*(one(writer) for writer in writers))


class Serve:
    """A ``python -m service serve`` subprocess with its worker off, and stream tokens for it."""

    def __init__(self, server: ServerProcess, secret: str, key_id: UUID, admin_key: str) -> None:
        self.server = server
        self._secret = secret
        self._key_id = key_id  # the live key the bench's stream tokens are issued through
        self._admin_key = admin_key  # for its /metrics

    @classmethod
    async def start(cls, database_url: str, work_dir: Path, **settings: str) -> Serve:
        secret = secrets.token_urlsafe(32)
        env = {
            "DATABASE_URL": database_url,
            "GENSTREAM_WORKER_CONCURRENCY": "0",
            "GENSTREAM_STREAM_TOKEN_SECRET": secret,
            "GENSTREAM_DATA_DIR": str(work_dir / "serve-data"),
            # The benchmarks measure the log and the streams, not the quotas: no limits.
            "GENSTREAM_OWNER_MAX_ACTIVE_RUNS": "0",
            "GENSTREAM_OWNER_RUNS_PER_MINUTE": "0",
            "GENSTREAM_OWNER_MAX_STREAMS": "0",
            "GENSTREAM_MAX_CONNECTIONS": "1000000",  # case 3 holds 10,000 streams on one serve
            **{f"GENSTREAM_{name.upper()}": value for name, value in settings.items()},
        }
        server = await ServerProcess.start(
            "genstream-serve", ["-m", "service", "serve"], log_dir=work_dir, env=env
        )
        pool = await create_pool(database_url, min_size=1, max_size=1)
        try:
            caller = await keys.authenticate(pool, await keys.create_key(pool, "bench"))
            admin_key = await keys.create_key(pool, "bench-ops", is_admin=True)
        finally:
            await pool.close()
        return cls(server, secret, caller.key_id, admin_key)

    def stream_path(self, generation_id: UUID, after: int) -> str:
        token = tokens.issue(self._secret, generation_id, TOKEN_TTL_S, self._key_id)
        return f"/api/generations/{generation_id}/stream?token={token}&after={after}"

    async def buckets(self, histogram: str) -> list[tuple[float, float]]:
        """One of the process's histograms as its /metrics has it: (upper bound, cumulative
        count) per bucket, +Inf last."""
        async with httpx.AsyncClient(base_url=self.server.base_url, timeout=30) as client:
            response = await client.get(
                "/metrics", headers={"Authorization": f"Bearer {self._admin_key}"}
            )
        response.raise_for_status()
        for family in text_string_to_metric_families(response.text):
            if family.name == histogram:
                return [
                    (float(sample.labels["le"]), sample.value)
                    for sample in family.samples
                    if sample.name.endswith("_bucket")
                ]
        raise LookupError(f"{histogram} is not in serve's /metrics")

    async def stop(self) -> None:
        await self.server.stop()
