"""Alembic from code, on a database that starts with no schema at all."""

from __future__ import annotations

import asyncio

import asyncpg
from alembic import command

from service.store.db import asyncpg_dsn
from service.store.migrate import alembic_config, current_revisions, head_revisions, upgrade

TABLES = ("generations", "generation_events", "generated_files", "api_keys")


async def state(url: str) -> tuple[frozenset[str], set[str]]:
    """(the alembic revisions, the service's tables that exist)."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        revisions = await current_revisions(conn)
        tables = {t for t in TABLES if await conn.fetchval("SELECT to_regclass($1)::text", t)}
    finally:
        await conn.close()
    return revisions, tables


async def test_upgrade_brings_an_empty_database_to_head(empty_database_url: str) -> None:
    assert await state(empty_database_url) == (frozenset(), set())

    await asyncio.to_thread(upgrade, empty_database_url)

    assert head_revisions()
    assert await state(empty_database_url) == (head_revisions(), set(TABLES))


async def test_downgrade_to_base_then_upgrade_again(empty_database_url: str) -> None:
    await asyncio.to_thread(upgrade, empty_database_url)

    await asyncio.to_thread(command.downgrade, alembic_config(empty_database_url), "base")
    assert await state(empty_database_url) == (frozenset(), set())

    await asyncio.to_thread(upgrade, empty_database_url)
    assert await state(empty_database_url) == (head_revisions(), set(TABLES))
