from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import pytest
from asyncpg import connect_utils

from service.errors import StoreUnavailable
from service.store.db import (
    HeldConnection,
    Pool,
    asyncpg_dsn,
    connection,
    create_pool,
    sqlalchemy_url,
    waiting_for_a_connection,
)
from tests.helpers import wait_until

RESETS = ["asyncpg-reset", "genstream"]


async def pool_with(database_url: str, reset: str) -> Pool:
    """genstream's pool of one connection (no reset query on release), or asyncpg's default
    pool, which sends one."""
    if reset == "genstream":
        return await create_pool(database_url, min_size=1, max_size=1)
    return await asyncpg.create_pool(asyncpg_dsn(database_url), min_size=1, max_size=1)


@pytest.mark.parametrize("reset", RESETS)
async def test_a_transaction_left_open_is_rolled_back_when_its_connection_goes_back(
    database_url: str, reset: str
) -> None:
    # What asyncpg's pool guarantees on release, reset query or not, and genstream relies on.
    pool = await pool_with(database_url, reset)
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


@pytest.mark.parametrize("reset", RESETS)
async def test_a_cancel_that_reaches_the_server_late_spares_the_next_query(
    database_url: str, monkeypatch: pytest.MonkeyPatch, reset: str
) -> None:
    """A query whose task is cancelled mid-flight, and whose cancel request reaches the server
    only once the query has ended: what the reset query was thought to absorb (commit
    04ae52b). asyncpg lets the connection serve nothing else until the request was delivered
    (the pool waits for it on release, the protocol again before each query), and PostgreSQL
    drops a cancel that finds its backend idle: the next query on the same connection runs
    whole, with the reset query or without it."""
    first = "SELECT pg_sleep(0.3) -- the first"
    watcher = await asyncpg.connect(asyncpg_dsn(database_url))
    real_cancel = connect_utils._cancel  # type: ignore[attr-defined]

    async def running(pid: int, query: str) -> bool:
        row = await watcher.fetchrow(
            "SELECT state, query FROM pg_stat_activity WHERE pid = $1", pid
        )
        return row is not None and (row["state"], row["query"]) == ("active", query)

    async def late_cancel(**request: Any) -> None:
        pid = request["backend_pid"]

        async def first_over() -> bool:
            return not await running(pid, first)

        await wait_until(first_over, "the first query ends")
        await real_cancel(**request)

    monkeypatch.setattr(connect_utils, "_cancel", late_cancel)
    pool = await pool_with(database_url, reset)
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")

        async def query_first() -> None:
            async with pool.acquire() as conn:
                await conn.execute(first)

        task = asyncio.create_task(query_first())
        await wait_until(lambda: running(pid, first), "the first query runs")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid
            await conn.execute("SELECT pg_sleep(0.2) -- the next")  # no QueryCanceledError
    finally:
        await pool.close()
        await watcher.close()


@pytest.mark.parametrize("reset", RESETS)
async def test_only_asyncpgs_pool_sends_a_reset_query_on_release(
    database_url: str, reset: str
) -> None:
    # The round trip genstream saves on every acquire: the server's last query for the pooled
    # connection, once it is back in the pool, is still the caller's own.
    pool = await pool_with(database_url, reset)
    watcher = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        async with pool.acquire() as conn:
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("SELECT 42 -- the caller's")

        async def idle_after() -> str | None:
            row = await watcher.fetchrow(
                "SELECT state, query FROM pg_stat_activity WHERE pid = $1", pid
            )
            return row["query"] if row is not None and row["state"] == "idle" else None

        if reset == "genstream":
            assert await idle_after() == "SELECT 42 -- the caller's"
        else:
            await wait_until(lambda: _settled(idle_after, "RESET ALL"), "the reset query has run")
    finally:
        await pool.close()
        await watcher.close()


async def _settled(read: Any, tail: str) -> bool:
    query = await read()
    return query is not None and query.rstrip("; ").endswith(tail)


async def test_a_direct_pool_asks_for_its_session_settings(database_url: str) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with connection(pool) as conn:
            assert await conn.fetchval("SHOW jit") == "off"
            assert await conn.fetchval("SHOW extra_float_digits") == "1"
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


async def test_a_cancel_inside_a_unit_of_work_stays_a_cancel_when_its_connection_is_gone(
    database_url: str,
) -> None:
    # The server drops the connection mid-transaction; the task is then cancelled. Releasing
    # the dead connection fails, and that must not replace the cancel by StoreUnavailable
    # (a cancelled writer would retry its append for its whole retry window).
    pool = await create_pool(database_url, min_size=1, max_size=1)
    killer = await asyncpg.connect(asyncpg_dsn(database_url))
    try:

        async def unit_of_work() -> None:
            async with connection(pool) as conn:
                await conn.execute("BEGIN")
                pid = await conn.fetchval("SELECT pg_backend_pid()")
                await killer.execute("SELECT pg_terminate_backend($1)", pid)
                raise asyncio.CancelledError

        with pytest.raises(asyncio.CancelledError):
            await unit_of_work()
    finally:
        await killer.close()
        await pool.close()


@asynccontextmanager
async def held_connection(
    database_url: str, max_size: int
) -> AsyncIterator[tuple[Pool, HeldConnection, asyncpg.Connection[Any]]]:
    """A pool, a HeldConnection on it, and a connection of the test's own beside them."""
    pool = await create_pool(database_url, min_size=1, max_size=max_size)
    held = HeldConnection(pool)
    side = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        yield pool, held, side
    finally:
        await side.close()
        await held.release()
        await pool.close()


def server_closed(conn: Any) -> bool:
    try:
        return bool(conn.is_closed())
    except asyncpg.InterfaceError:  # detached by the pool: closed
        return True


async def backend_pid(held: HeldConnection) -> int:
    async with held.use() as conn:
        return int(await conn.fetchval("SELECT pg_backend_pid()"))


async def test_a_held_connection_serves_unit_after_unit_until_another_task_waits(
    database_url: str,
) -> None:
    """Kept between units (no acquire each time), and given back after the unit during which
    another task began to wait for the pool: with a pool of one, that task is served."""
    async with held_connection(database_url, 1) as (pool, held, _):
        pids = {await backend_pid(held) for _ in range(5)}
        assert len(pids) == 1
        assert held.held
        assert pool.get_idle_size() == 0

        async def another_unit() -> int:
            async with connection(pool) as conn:
                return int(await conn.fetchval("SELECT 1"))

        async with held.use() as conn:
            other = asyncio.create_task(another_unit())
            await wait_until(lambda: waiting_for_a_connection(pool) == 1, "the other waits")
            await conn.fetchval("SELECT 1")
        assert not held.held
        assert await asyncio.wait_for(other, 10) == 1
        assert await backend_pid(held) in pids  # acquired again for the next unit
        await held.release()
        assert pool.get_idle_size() == 1


async def test_a_held_connection_the_server_dropped_between_units_is_replaced_unnoticed(
    database_url: str,
) -> None:
    async with held_connection(database_url, 2) as (_, held, side):
        async with held.use() as first:
            pid = await first.fetchval("SELECT pg_backend_pid()")
        await side.execute("SELECT pg_terminate_backend($1)", pid)
        await wait_until(lambda: server_closed(first), "the client saw the connection close")
        assert await backend_pid(held) != pid


async def test_a_held_connection_lost_during_a_unit_is_store_unavailable_then_replaced(
    database_url: str,
) -> None:
    async with held_connection(database_url, 2) as (_, held, side):
        pids: list[int] = []

        async def unit_killed_midway() -> None:
            async with held.use() as conn:
                pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
                await side.execute("SELECT pg_terminate_backend($1)", pids[0])
                await conn.fetchval("SELECT pg_sleep(5)")

        with pytest.raises(StoreUnavailable):
            await unit_killed_midway()
        assert not held.held
        assert await backend_pid(held) != pids[0]


async def test_a_held_connection_between_units_goes_to_a_task_that_starts_waiting(
    database_url: str,
) -> None:
    """Its keeper may not come back for a while: the waiting task takes it at once."""
    async with held_connection(database_url, 1) as (pool, held, _):
        await backend_pid(held)
        assert held.held
        async with asyncio.timeout(5), connection(pool) as conn:
            assert await conn.fetchval("SELECT 1") == 1
        assert not held.held


async def test_a_held_connection_goes_back_to_the_pool_every_so_many_units(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """So the pool's own recycling (max_queries, expire_connections) reaches it."""
    monkeypatch.setattr(HeldConnection, "UNITS_MAX", 3)
    async with held_connection(database_url, 1) as (_, held, _):
        kept = []
        for _ in range(6):
            await backend_pid(held)
            kept.append(held.held)
        assert kept == [True, True, False, True, True, False]


async def test_a_unit_cancelled_mid_statement_leaves_nothing_running_on_the_next(
    database_url: str,
) -> None:
    """A cancel leaves the session's state unknown: the connection goes back to the pool
    (which settles it) and the next unit starts clean."""
    async with held_connection(database_url, 1) as (_, held, side):

        async def slow_unit() -> None:
            async with held.use() as conn:
                await conn.execute("BEGIN")
                await conn.execute("SELECT pg_sleep(30)")

        unit = asyncio.create_task(slow_unit())
        sleeping = "SELECT count(*) > 0 FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'"
        await wait_until(lambda: side.fetchval(sleeping + " AND state = 'active'"), "asleep")
        unit.cancel()
        with pytest.raises(asyncio.CancelledError):
            await unit
        assert not held.held
        async with held.use() as conn:
            assert await conn.fetchval("SELECT pg_current_xact_id_if_assigned() IS NULL")
            assert not conn.is_in_transaction()
        assert not await side.fetchval(sleeping + " AND state = 'active'")
