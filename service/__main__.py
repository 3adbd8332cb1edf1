"""The command line: ``python -m service --help``."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import resource
import signal
import socket
import sys
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TextIO
from uuid import UUID

import uvicorn

from service.errors import GenstreamError
from service.settings import Settings, get_settings

log = logging.getLogger("service")


def database_url(settings: Settings) -> str:
    """``DATABASE_URL`` if set, else the embedded cluster under ``data_dir`` (started if needed)."""
    if settings.database_url:
        return settings.database_url
    from service.store.embedded import EmbeddedCluster

    return EmbeddedCluster(settings.data_dir / "postgres").start()


def _raise_open_file_limit() -> None:
    """Each SSE client is a socket: the default soft limit of 1024 caps streams near 1000."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from service.store.migrate import upgrade

    upgrade(database_url(settings))
    print("database at head", file=sys.stderr)
    return 0


def cmd_serve(settings: Settings, _args: argparse.Namespace) -> int:
    from service.app import create_app
    from service.store.migrate import upgrade

    url = database_url(settings)
    upgrade(url)
    _raise_open_file_limit()
    app = create_app(settings, url)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            # A full collection walks every live object with the loop stopped: 60-80 ms with
            # 1,000 open streams, the slowest 1% of deliveries to 1,000 followers of one
            # generation (measured, bench case 2). What is alive now (modules, the app, the
            # pool) lives as long as the process, so it leaves the collector's sight; and
            # young collections run every 20,000 allocations instead of 700, so that a full
            # one comes every few million allocations (minutes under load), not every second.
            gc.collect()
            gc.freeze()
            gc.set_threshold(20_000, 20, 50)

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Streams are endless: tell them to end, or uvicorn waits on them forever.
            services = getattr(app.state, "services", None)
            if services is not None:
                asyncio.get_running_loop().call_soon_threadsafe(services.hub.close)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    Server(config).run()
    return 0


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    from service.generation.generator import make_generate
    from service.generation.runner import Worker
    from service.store import generations
    from service.store.db import create_pool
    from service.store.listener import Listener
    from service.store.migrate import upgrade

    url = database_url(settings)
    upgrade(url)

    async def main() -> None:
        pool = await create_pool(url, max_size=max(2, settings.worker_concurrency + 1))
        worker = Worker(
            pool,
            make_generate(settings),
            concurrency=max(1, settings.worker_concurrency),
            poll_s=settings.worker_poll_s,
            lease_s=settings.lease_s,
            attempts_max=settings.run_attempts_max,
        )
        listener = Listener(
            url,
            {
                generations.JOBS_CHANNEL: worker.wake,
                generations.CANCEL_CHANNEL: worker.request_cancel,
            },
            worker.wake,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        listener.start()
        worker.start()
        log.info("worker %s running", worker.worker_id)
        await stop.wait()
        await worker.stop()
        await listener.stop()
        await pool.close()

    asyncio.run(main())
    return 0


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from service import keys
    from service.store.db import create_pool
    from service.store.migrate import upgrade

    url = database_url(settings)
    upgrade(url)

    async def main() -> str:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            return await keys.create_key(pool, args.owner, is_admin=args.admin)
        finally:
            await pool.close()

    print(asyncio.run(main()))
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from collections.abc import AsyncIterator

    from service import streams
    from service.store import event_log
    from service.store.db import connection, create_pool
    from service.store.event_log import StoredEvent

    url = database_url(settings)

    async def main() -> None:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            async with connection(pool) as conn:
                head = await event_log.select_head(conn, args.generation_id)
                if args.pace == "recorded":
                    streams.check_replay(head, args.speed)

                async def pages() -> AsyncIterator[list[StoredEvent] | streams.Keepalive]:
                    after = args.after
                    while page := await event_log.select_events_after(
                        conn, args.generation_id, after, 1000
                    ):
                        yield page
                        after = page[-1].seq

                items = pages()
                if args.pace == "recorded":
                    items = streams.paced(items, args.speed)
                async for page in items:
                    if isinstance(page, list):
                        sys.stdout.write("".join(event.json + "\n" for event in page))
                        sys.stdout.flush()
        finally:
            await pool.close()

    asyncio.run(main())
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from service.store.db import create_pool
    from service.transfer import export_lines

    url = database_url(settings)

    async def main(out: TextIO) -> None:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            ids = args.generation_ids or None
            async for line in export_lines(pool, ids, args.since, args.until):
                out.write(line)
        finally:
            await pool.close()

    if args.output is None:
        asyncio.run(main(sys.stdout))
    else:
        with open(args.output, "w") as out:
            asyncio.run(main(out))
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from service.store.db import create_pool
    from service.transfer import import_lines

    url = database_url(settings)

    async def main(source: TextIO) -> None:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            result = await import_lines(pool, source)
        finally:
            await pool.close()
        print(
            f"imported {len(result.stored)} generation(s); "
            f"skipped {len(result.skipped)} already present",
            file=sys.stderr,
        )

    if args.file is None:
        asyncio.run(main(sys.stdin))
    else:
        with open(args.file) as source:
            asyncio.run(main(source))
    return 0


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from service.store import projections
    from service.store.db import connection, create_pool

    url = database_url(settings)

    async def main() -> int:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            async with connection(pool) as conn:
                if not args.check:
                    changed = await projections.rebuild(conn)
                    print(f"rebuilt {changed} generation row(s) from their events")
                    return 0
                differences = await projections.select_differences(conn)
        finally:
            await pool.close()
        for d in differences:
            print(f"{d.generation_id} {d.column}: row says {d.projected!r}, log says {d.rebuilt!r}")
        print(f"{len(differences)} difference(s)", file=sys.stderr)
        return 1 if differences else 0

    return asyncio.run(main())


def cmd_db_stop(settings: Settings, _args: argparse.Namespace) -> int:
    from service.store.embedded import EmbeddedCluster

    EmbeddedCluster(settings.data_dir / "postgres").stop()
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="python -m service",
        description="genstream: event-sourced LLM code generation, streamed over SSE.",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "serve", help="HTTP API and an in-process worker (HOST, PORT)"
    ).set_defaults(run=cmd_serve)
    commands.add_parser("worker", help="run generations only, no HTTP").set_defaults(run=cmd_worker)
    commands.add_parser("migrate", help="apply the Alembic migrations up to head").set_defaults(
        run=cmd_migrate
    )
    keys = commands.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    create = keys.add_parser("create", help="print one new API key, alone on stdout")
    create.add_argument(
        "--owner", required=True, help="who the key (and its generations) belong to"
    )
    create.add_argument("--admin", action="store_true", help="may read the global event feed")
    create.set_defaults(run=cmd_keys_create)
    replay = commands.add_parser("replay", help="print a generation's stored events as JSON lines")
    replay.add_argument("generation_id", type=UUID)
    replay.add_argument("--after", type=int, default=0, help="start after this seq")
    replay.add_argument(
        "--pace",
        choices=("stored", "recorded"),
        default="stored",
        help="recorded: each event after the pause that preceded it (a finished generation)",
    )
    replay.add_argument("--speed", type=float, default=1.0, help="with --pace recorded")
    replay.set_defaults(run=cmd_replay)
    export = commands.add_parser(
        "export", help="write generations as NDJSON: all, the ids given, or created in a range"
    )
    export.add_argument("generation_ids", nargs="*", type=UUID, metavar="GENERATION_ID")
    export.add_argument("--since", type=datetime.fromisoformat, help="created at or after (ISO)")
    export.add_argument("--until", type=datetime.fromisoformat, help="created before (ISO)")
    export.add_argument("--output", "-o", type=Path, help="a file instead of stdout")
    export.set_defaults(run=cmd_export)
    load = commands.add_parser(
        "import", help="store the generations of an export (a file, or stdin)"
    )
    load.add_argument("file", nargs="?", type=Path)
    load.set_defaults(run=cmd_import)
    rebuild = commands.add_parser(
        "rebuild", help="recompute every generation row's projected state from its events"
    )
    rebuild.add_argument(
        "--check", action="store_true", help="only report differences (exit 1 if any)"
    )
    rebuild.set_defaults(run=cmd_rebuild)
    db = commands.add_parser("db", help="the embedded PostgreSQL cluster").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    db.add_parser("stop", help="stop the embedded cluster under data_dir").set_defaults(
        run=cmd_db_stop
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        code: int = args.run(get_settings(), args)
    except GenstreamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
