"""What partitioning costs a large log: migration 0012 on N legacy events, then a period made
in one transaction and one fenced, each with how long a reader of the DEFAULT partition waited.

    PYTHONPATH=$PWD .venv/bin/python -m scripts.partitions_cost [EVENTS]   (default 10^6)

A throwaway embedded cluster; the log is filled at 0011 with INSERT ... SELECT
generate_series (100 events and one file per run, v4 ids, as before UUIDv7).
GENSTREAM_PARTITIONS_AHEAD sets how many periods the migration makes (and scans for).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable
from datetime import UTC, datetime

import asyncpg
from alembic import command

from service.store.db import asyncpg_dsn
from service.store.embedded import throwaway_cluster
from service.store.migrate import alembic_config, upgrade
from service.store.partitions import ensure_partitions

PER_RUN = 100

FILL = """
INSERT INTO generations (id, owner, status, stage, message, spec, provider, last_seq)
SELECT gen_random_uuid(), 'cost', 'succeeded', 'done', '', '{{}}', 'offline', {per_run}
FROM generate_series(1, {runs});
INSERT INTO generation_events
    (generation_id, seq, type, status, stage, progress, message, payload)
SELECT g.id, s, CASE WHEN s % 10 = 0 THEN 'phase.completed' ELSE 'llm.delta' END,
    'running', 'code', 0.5, '', jsonb_build_object('text', repeat('x', 80))
FROM generations AS g, generate_series(1, {per_run}) AS s;
INSERT INTO generated_files (generation_id, path, content, size, sha256, language, seq)
SELECT g.id, 'main.py', repeat('y', 200), 200, '', 'python', {per_run}
FROM generations AS g;
"""

READ_DEFAULT = "SELECT count(*) FROM (SELECT 1 FROM generation_events_default LIMIT 1) AS one"


async def execute(url: str, sql: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def timed_with_reader(url: str, work: Awaitable[list[str]]) -> tuple[float, float, int]:
    """(seconds ``work`` took, longest a reader of the default waited meanwhile, made)."""
    reader = await asyncpg.connect(asyncpg_dsn(url))
    worst, done = 0.0, False

    async def poll() -> None:
        nonlocal worst
        while not done:
            started = time.perf_counter()
            await reader.fetchval(READ_DEFAULT)
            worst = max(worst, time.perf_counter() - started)
            await asyncio.sleep(0.005)

    polling = asyncio.create_task(poll())
    started = time.perf_counter()
    try:
        made = await work
    finally:
        spent = time.perf_counter() - started
        done = True
        await polling
        await reader.close()
    return spent, worst, len(made)


async def periods(url: str, events: int) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        later = datetime(2030, 6, 15, tzinfo=UTC)
        spent, worst, made = await timed_with_reader(
            url, ensure_partitions(conn, "month", 0, later)
        )
        print(
            f"a current period ({made} partitions), one transaction, {events:,} legacy events: "
            f"{spent:.2f} s; a reader of the default waited up to {worst * 1000:.0f} ms"
        )
        spent, worst, made = await timed_with_reader(
            url, ensure_partitions(conn, "month", 1, later)
        )
        print(
            f"a coming period ({made} partitions), fenced: {spent:.2f} s; "
            f"a reader of the default waited up to {worst * 1000:.0f} ms"
        )
    finally:
        await conn.close()


def main(events: int) -> None:
    cluster = throwaway_cluster()
    try:
        url = cluster.start()
        command.upgrade(alembic_config(url), "0011")
        started = time.perf_counter()
        runs = max(1, events // PER_RUN)
        asyncio.run(execute(url, FILL.format(runs=runs, per_run=PER_RUN)))
        asyncio.run(execute(url, "VACUUM ANALYZE"))
        print(f"filled {runs * PER_RUN:,} events in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        upgrade(url)
        print(f"migration 0012: {time.perf_counter() - started:.2f} s")
        asyncio.run(periods(url, events))
        started = time.perf_counter()
        command.downgrade(alembic_config(url), "0011")
        print(f"downgrade to 0011: {time.perf_counter() - started:.2f} s")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
