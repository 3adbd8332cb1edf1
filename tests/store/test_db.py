from __future__ import annotations

import asyncpg
import pytest

from service.errors import StoreUnavailable
from service.store.db import asyncpg_dsn, connection, create_pool, sqlalchemy_url


async def test_a_transaction_left_open_is_rolled_back_when_its_connection_goes_back(
    database_url: str,
) -> None:
    # What asyncpg's pool guarantees on release, and genstream relies on.
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE scratch (n int)")
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO scratch VALUES (1)")
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM scratch") == 0
    finally:
        await pool.close()


async def test_one_connection_serves_many_units_of_work(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        pids = set()
        for _ in range(20):
            async with connection(pool) as conn:
                pids.add(await conn.fetchval("SELECT pg_backend_pid()"))
        assert len(pids) == 1
    finally:
        await pool.close()


async def test_an_unreachable_database_is_store_unavailable() -> None:
    with pytest.raises(StoreUnavailable):
        await create_pool("postgresql://nobody@127.0.0.1:1/none", min_size=1, max_size=1)


def test_urls_are_translated_for_each_driver() -> None:
    assert asyncpg_dsn("postgresql+asyncpg://u:p@h:5/d") == "postgresql://u:p@h:5/d"
    assert asyncpg_dsn("postgres://u@h/d") == "postgresql://u@h/d"
    assert sqlalchemy_url("postgresql://u@h/d") == "postgresql+asyncpg://u@h/d"
    with pytest.raises(ValueError, match="not a database URL"):
        asyncpg_dsn("not a url")


async def test_a_dropped_connection_becomes_store_unavailable(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        with pytest.raises(StoreUnavailable):
            async with connection(pool):
                raise asyncpg.exceptions.ConnectionDoesNotExistError("gone")
    finally:
        await pool.close()
