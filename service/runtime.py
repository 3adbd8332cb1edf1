"""What a genstream process runs besides HTTP, built in one place: the pool, the worker and the
appender its runs append through, the one LISTEN connection that wakes them, and (when the
process serves streams) the hub.

``app.py`` opens it for ``serve``; the ``worker`` command opens it alone. Neither wires these
parts by hand, so a new channel or a new part is added here once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import asyncpg

from service.errors import StoreUnavailable
from service.generation.appender import Appender
from service.generation.generator import make_generate
from service.generation.runner import Worker
from service.generation.runs import observe_queue
from service.observe.logs import get_logger
from service.settings import Settings
from service.store import event_log, generations, partitions
from service.store.db import Pool, connection, create_pool, forget_pool, observe_pool
from service.store.listener import Listener
from service.store.reads import Reads
from service.streams.hub import Hub

log = get_logger(__name__)

QUEUE_GAUGES_EVERY_S: Final = 10.0
# Periods are created GENSTREAM_PARTITIONS_AHEAD ahead, so an hourly check has days to spare;
# runs made before a period exists are not lost either: they land in the DEFAULT partition.
PARTITIONS_EVERY_S: Final = 3600.0


@dataclass(frozen=True, slots=True)
class Runtime:
    pool: Pool
    reads: Reads  # on the standby of GENSTREAM_REPLICA_URL, or the primary's pool
    worker: Worker
    listener: Listener
    hub: Hub | None  # None in a process that serves no streams


@asynccontextmanager
async def open_runtime(
    settings: Settings, database_url: str, *, serves_streams: bool
) -> AsyncIterator[Runtime]:
    """Start every part, yield them, and stop them in the order that loses nothing: streams
    are told to end first, the worker releases its runs' leases while the pool still
    answers, and the pool closes last."""
    pooler = settings.database_pooler
    if serves_streams:
        pool = await create_pool(
            database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            pooler=pooler,
        )
        concurrency = settings.worker_concurrency
    else:  # a worker-only process: one connection per run, one for claims and leases
        concurrency = max(1, settings.worker_concurrency)
        pool = await create_pool(database_url, max_size=max(2, concurrency + 1), pooler=pooler)
    observe_pool(pool)
    reads = await open_reads(settings, pool, serves_streams=serves_streams)
    appender = Appender(pool)  # the runs' appends, committed together (group commit)
    worker = Worker(
        pool,
        make_generate(settings),
        concurrency=concurrency,
        poll_s=settings.worker_poll_s,
        lease_s=settings.lease_s,
        attempts_max=settings.run_attempts_max,
        appender=appender,
    )
    hub = Hub(pool, reads=reads, page_size=settings.stream_page_size) if serves_streams else None
    channels: dict[str, Callable[[str], None]] = {
        generations.JOBS_CHANNEL: worker.wake,
        generations.CANCEL_CHANNEL: worker.request_cancel,
    }
    if hub is not None:
        channels[event_log.EVENTS_CHANNEL] = _wake_followers(hub)

    def on_connect() -> None:
        if hub is not None:
            hub.wake_all()  # anything appended while we were not listening
        worker.wake()

    listener = Listener(
        settings.direct_url or database_url,  # LISTEN needs a session: never through a pooler
        channels,
        on_connect,
        reconnect_max_s=settings.listener_reconnect_max_s,
    )
    listener.start()
    if hub is not None:
        hub.start_checking(settings.wakeup_check_s)
    appender.start()
    if concurrency > 0:
        worker.start()
    queue_gauges = asyncio.create_task(_observe_queue(pool), name="genstream-queue-gauges")
    keep_partitions = asyncio.create_task(
        _keep_partitions(pool, settings), name="genstream-partitions"
    )
    try:
        yield Runtime(pool=pool, reads=reads, worker=worker, listener=listener, hub=hub)
    finally:
        for task in (queue_gauges, keep_partitions):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if hub is not None:
            hub.end_streams()
            await hub.stop()
        await worker.stop()
        await appender.stop()
        await listener.stop()
        forget_pool(pool)
        if reads.replica is not None:
            await reads.replica.close()
        await pool.close()


async def open_reads(settings: Settings, primary: Pool, *, serves_streams: bool) -> Reads:
    """The reads a standby may answer: a pool on ``GENSTREAM_REPLICA_URL`` beside the
    primary's, for ``serve`` only (a worker reads and writes its runs on the primary)."""
    if settings.replica_url is None or not serves_streams:
        return Reads(primary, wait_s=settings.replica_wait_s)
    # No connection at start (min_size 0): a standby that is away must not keep serve from
    # starting; its reads go to the primary until it answers (store/reads.py).
    replica = await create_pool(
        settings.replica_url,
        min_size=0,
        max_size=settings.pool_max_size,
        pooler=settings.database_pooler,  # a standby behind the same kind of pooler, if any
    )
    return Reads(primary, replica, wait_s=settings.replica_wait_s)


async def _observe_queue(pool: Pool) -> None:
    """The queue's gauges, kept fresh for a scraper of ``GENSTREAM_METRICS_ADDRESS`` (the
    API's ``/metrics`` refreshes them itself)."""
    while True:
        try:
            await observe_queue(pool)
        except StoreUnavailable:
            pass  # genstream_db_up tells the operator; the gauges keep their last values
        except Exception:
            log.exception("metrics.queue_failed")
        await asyncio.sleep(QUEUE_GAUGES_EVERY_S)


async def _ensure_partitions(pool: Pool, settings: Settings) -> None:
    """The log's current and coming periods (store/partitions.py). A failure is logged, not
    fatal: appends still land, in the DEFAULT partition, and the next hour tries again."""
    try:
        async with connection(pool) as conn:
            created = await partitions.ensure_partitions(
                conn, settings.partition_period, settings.partitions_ahead, datetime.now(UTC)
            )
    except StoreUnavailable:
        return
    except asyncpg.LockNotAvailableError:  # a long query held the log: the next hour tries
        log.warning("partitions.busy")
        return
    except Exception:
        log.exception("partitions.ensure_failed")
        return
    if created:
        log.info("partitions.created", partitions=created)


async def _keep_partitions(pool: Pool, settings: Settings) -> None:
    """At start and hourly. In the background, not awaited before serving: a period's check
    may scan a converted database's legacy rows for a while, and nothing waits on it."""
    while True:
        await _ensure_partitions(pool, settings)
        await asyncio.sleep(PARTITIONS_EVERY_S)


def _wake_followers(hub: Hub) -> Callable[[str], None]:
    def on_event(payload: str) -> None:
        if (notified := event_log.parse_notification(payload)) is not None:
            hub.wake(*notified)

    return on_event
