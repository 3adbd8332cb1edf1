"""Appends and stream opens, straight to PostgreSQL and through PgBouncer in transaction mode.

    python -m scripts.pooler_bench [--writers 8] [--seconds 5] [--pool-sizes 2,8] [--opens 40]

A durable embedded cluster of its own (default fsync), Debian's pgbouncer (``make pooler``)
configured as in the README, genstream's own code on both paths: ``event_log.append`` from one
task, then ``--writers`` tasks (one event per append, one generation each), then ``--opens``
stream opens of a finished generation of ``--events`` events through a real ``serve`` app
(time to the first frame and to the whole log). Prints PgBouncer's SHOW POOLS and SHOW STATS
after each of its runs, then one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from httpx_sse import aconnect_sse

from service.access import keys
from service.app import create_app
from service.events import EventType, NewEvent
from service.settings import Settings
from service.store import event_log
from service.store.db import Pool, Pooler, create_pool
from service.store.embedded import EmbeddedCluster
from service.store.migrate import upgrade
from tests.conftest import serve
from tests.helpers import insert_running_generation
from tests.pooler import PgBouncer, running_pgbouncer


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def appends(pool: Pool, writers: int, seconds: float) -> tuple[list[UUID], dict[str, float]]:
    ids = [await insert_running_generation(pool, "bench") for _ in range(writers)]
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def write(generation_id: UUID) -> None:
        n = 0
        while time.monotonic() < deadline:
            event = NewEvent(EventType.LLM_DELTA, "models", 0.5, f"chunk {n}", {"n": n})
            started = time.perf_counter()
            async with pool.acquire() as conn:
                await event_log.append(conn, generation_id, [event])
            latencies.append(time.perf_counter() - started)
            n += 1

    began = time.monotonic()
    await asyncio.gather(*(write(generation_id) for generation_id in ids))
    elapsed = time.monotonic() - began
    for generation_id in ids:
        async with pool.acquire() as conn:
            done = NewEvent(EventType.SUCCEEDED, "done", 1.0, "done")
            await event_log.append(conn, generation_id, [done])
    return ids, {
        "appends_per_s": len(latencies) / elapsed,
        "append_p50_ms": percentile(latencies, 50) * 1000,
        "append_p99_ms": percentile(latencies, 99) * 1000,
    }


async def stream_opens(
    settings: Settings, url: str, pool: Pool, generation_id: UUID, opens: int
) -> dict[str, float]:
    key = await keys.create_key(pool, "bench")
    firsts: list[float] = []
    wholes: list[float] = []
    frames = 0
    async with serve(create_app(settings, url)) as running:
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=running.base_url, headers=headers) as client:
            for _ in range(opens):
                started = time.perf_counter()
                first = None
                frames = 0
                path = f"/api/generations/{generation_id}/stream"
                async with aconnect_sse(client, "GET", path) as source:
                    async for sse in source.aiter_sse():
                        if not sse.data:
                            continue
                        frames += 1
                        first = first or time.perf_counter()
                        if json.loads(sse.data)["type"] == "generation.succeeded":
                            break
                assert first is not None
                firsts.append(first - started)
                wholes.append(time.perf_counter() - started)
    return {
        "open_first_frame_p50_ms": percentile(firsts, 50) * 1000,
        "open_whole_log_p50_ms": percentile(wholes, 50) * 1000,
        "open_whole_log_p99_ms": percentile(wholes, 99) * 1000,
        "events_per_open": frames,
    }


async def measure(
    url: str, pooler: Pooler, direct_url: str, args: argparse.Namespace, data_dir: Path
) -> dict[str, float]:
    pool = await create_pool(url, max_size=args.writers + 2, pooler=pooler)
    try:
        numbers: dict[str, float] = {}
        for writers in (1, args.writers):
            _ids, appended = await appends(pool, writers, args.seconds)
            numbers |= {f"{name} ({writers}w)": value for name, value in appended.items()}
        generation_id = await insert_running_generation(pool, "bench")
        for n in range(0, args.events, 50):
            batch = [
                NewEvent(EventType.LLM_DELTA, "models", 0.5, f"chunk {i}", {"n": i})
                for i in range(n, min(n + 50, args.events))
            ]
            async with pool.acquire() as conn:
                await event_log.append(conn, generation_id, batch)
        async with pool.acquire() as conn:
            done = NewEvent(EventType.SUCCEEDED, "done", 1.0, "done")
            await event_log.append(conn, generation_id, [done])
        settings = Settings(
            DATABASE_URL=None,
            data_dir=data_dir,
            stream_token_secret="bench",  # noqa: S106 (a throwaway cluster)
            worker_concurrency=0,
            database_pooler=pooler,
            direct_url=direct_url,
        )
        numbers |= await stream_opens(settings, url, pool, generation_id, args.opens)
    finally:
        await pool.close()
    return numbers


def show(bouncer: PgBouncer, what: str) -> None:
    rows: list[dict[str, Any]] = bouncer.show(what)
    print(f"\nSHOW {what}")
    if rows:
        print("\t".join(rows[0]))
        for row in rows:
            print("\t".join(str(value) for value in row.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pool-sizes", default="2,8", help="PgBouncer's default_pool_size, each")
    parser.add_argument("--opens", type=int, default=40)
    parser.add_argument("--events", type=int, default=500, help="in the generation opened")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="genstream-poolbench-"))
    root.chmod(0o711)
    cluster = EmbeddedCluster(root, settings={"max_connections": "100"})
    try:
        url = cluster.start()
        upgrade(url)
        results: dict[str, dict[str, float]] = {}
        data_dir = root / "data"
        results["direct"] = asyncio.run(measure(url, "none", url, args, data_dir))
        # What the pooler mode costs without a pooler: unnamed statements, parsed every time.
        results["direct, unnamed"] = asyncio.run(measure(url, "transaction", url, args, data_dir))
        for size in (int(size) for size in args.pool_sizes.split(",")):
            with running_pgbouncer(url, pool_size=size) as bouncer:
                pooled = bouncer.url(url)
                label = f"pgbouncer pool {size}"
                results[label] = asyncio.run(measure(pooled, "transaction", url, args, data_dir))
                print(f"\n{label}, at the end of its run:")
                show(bouncer, "POOLS")
                show(bouncer, "STATS")
        print(f"\n{args.seconds:g} s of appends per writer count; {args.opens} stream opens")
        print(f"{'':36}" + "".join(f"{name:>20}" for name in results))
        for metric in results["direct"]:
            cells = "".join(f"{numbers[metric]:>20.2f}" for numbers in results.values())
            print(f"{metric:36}{cells}")
    finally:
        cluster.destroy()


if __name__ == "__main__":
    main()
