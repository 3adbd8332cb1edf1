"""The embedded PostgreSQL cluster: real initdb/pg_ctl, data kept across restarts."""

from __future__ import annotations

import asyncio

import asyncpg

from service.store.db import asyncpg_dsn
from service.store.embedded import EmbeddedCluster, throwaway_cluster


def postmaster_pid(cluster: EmbeddedCluster) -> int:
    return int((cluster.pgdata / "postmaster.pid").read_text().splitlines()[0])


async def query(url: str, sql: str) -> object:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def test_embedded_cluster_starts_once_restarts_with_its_data_and_is_destroyed() -> None:
    cluster = throwaway_cluster()
    try:
        url = await asyncio.to_thread(cluster.start)
        assert await query(url, "SELECT 1") == 1
        pid = postmaster_pid(cluster)

        assert await asyncio.to_thread(cluster.start) == url
        assert postmaster_pid(cluster) == pid  # the same postmaster, no second one

        await query(url, "CREATE TABLE kept (v text)")
        await query(url, "INSERT INTO kept VALUES ('before restart')")
        await asyncio.to_thread(cluster.stop)
        assert not (cluster.pgdata / "postmaster.pid").exists()

        restarted = await asyncio.to_thread(cluster.start)
        assert postmaster_pid(cluster) != pid
        assert await query(restarted, "SELECT v FROM kept") == "before restart"

        await asyncio.to_thread(cluster.destroy)
        assert not cluster.root.exists()
    finally:
        await asyncio.to_thread(cluster.destroy)
