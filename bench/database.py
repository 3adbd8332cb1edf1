"""The database the benchmarks run against, and what we record about it.

By default a throwaway embedded cluster, started the same way ``make run`` starts its own
(``service.store.embedded.EmbeddedCluster``), but in a fresh temporary directory and with
PostgreSQL's DEFAULT settings: fsync on, synchronous_commit on. (The test suite's
``throwaway_cluster()`` turns fsync off; a durability benchmark must not.) ``BENCH_DATABASE_URL``,
else ``DATABASE_URL``, points the suite at an existing server instead: it is migrated to head
and the bench writes its own generations (owner ``bench``) into it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from service.store.db import asyncpg_dsn
from service.store.embedded import EmbeddedCluster
from service.store.migrate import upgrade


@dataclass(frozen=True, slots=True)
class Database:
    url: str
    source: str


@contextmanager
def bench_database() -> Iterator[Database]:
    """Run outside any event loop: Alembic's env.py calls ``asyncio.run`` itself."""
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        upgrade(url)
        which = "BENCH_DATABASE_URL" if os.environ.get("BENCH_DATABASE_URL") else "DATABASE_URL"
        yield Database(url, f"{which} (an existing server)")
        return
    root = Path(tempfile.mkdtemp(prefix="genstream-bench-"))
    root.chmod(0o755)  # mkdtemp makes it 0700; the postgres user must reach inside when root
    cluster = EmbeddedCluster(root)  # no settings: PostgreSQL's defaults, durable commits
    try:
        url = cluster.start()
        upgrade(url)
        yield Database(url, f"throwaway embedded cluster in {cluster.root}, default settings")
    finally:
        cluster.destroy()


SETTINGS_REPORTED = (
    "server_version",
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "shared_buffers",
    "max_connections",
)


async def server_facts(url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        facts: dict[str, Any] = {}
        for name in SETTINGS_REPORTED:
            facts[name] = await conn.fetchval(f"SHOW {name}")
        return facts
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class ConnectionParts:
    host: str
    port: int
    user: str
    password: str
    dbname: str


def connection_parts(url: str) -> ConnectionParts:
    """For clients that want keyword arguments rather than a URL (psycopg via eventsourcing)."""
    parts = urlsplit(asyncpg_dsn(url))
    return ConnectionParts(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        dbname=unquote(parts.path.lstrip("/")) or "postgres",
    )
