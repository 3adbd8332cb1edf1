"""Alembic environment: async, over asyncpg. The URL comes from ``config.attributes["url"]``."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.store.tables import metadata

config = context.config


def _url() -> str:
    url = config.attributes.get("url")
    if not url:
        raise RuntimeError("no database URL: run migrations through `python -m service migrate`")
    return str(url)


# Held until the migration's transaction ends: processes that start together (every `serve`
# and `worker` migrates on start) upgrade one at a time, and the later ones find the schema at
# head (Alembic reads the version after the lock is taken) instead of racing to apply it twice.
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('genstream.migrate', 0))"


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        connection.execute(text(MIGRATION_LOCK))
        context.run_migrations()


async def _run_async() -> None:
    engine = create_async_engine(_url())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
