"""The command line (``genstream`` or ``python -m service``): parse, call one operation, exit.

Every command answers a user's mistake with one line on stderr that names what to fix, never
a traceback, and ends with the same exit codes:

    0   done
    1   failed, or the thing named does not exist
    2   usage: a wrong argument, or a bad environment value
    130 interrupted (Ctrl-C)

Commands that set a database up (``serve``, ``worker``, ``migrate``, ``keys create``,
``import``) bring its schema to head first; the ones that only read or repair an existing log
(``replay``, ``export``, ``rebuild``) leave the schema alone and, if it is missing or behind,
say to run ``migrate``: they never change the schema of a database an operator points them at.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO, TypeVar
from uuid import UUID

from pydantic import ValidationError

from service.errors import GenstreamError
from service.settings import Settings, environment_variable

if TYPE_CHECKING:  # the commands import what they use when they run: `--help` stays quick
    from service.store.db import Pool

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

T = TypeVar("T")

log = logging.getLogger("service")


class SchemaMissing(GenstreamError):
    """The database has no genstream schema, or an older one than this code needs."""


# --- the database a command works on ---------------------------------------------------------


def database_url(settings: Settings) -> str:
    """``DATABASE_URL`` if set, else the embedded cluster under ``data_dir`` (started if needed)."""
    if settings.database_url:
        return settings.database_url
    from service.store.embedded import EmbeddedCluster

    return EmbeddedCluster(settings.data_dir / "postgres").start()


def migrated_database(settings: Settings) -> str:
    from service.errors import StoreUnavailable
    from service.store.db import UNAVAILABLE_ERRORS
    from service.store.migrate import upgrade

    url = database_url(settings)
    try:
        upgrade(url)
    except UNAVAILABLE_ERRORS as exc:
        raise StoreUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
    return url


def with_pool(url: str, work: Callable[[Pool], Awaitable[T]], *, schema: bool = True) -> T:
    """Run ``work(pool)`` on a one-connection pool; with ``schema``, first make sure the
    database is at the migrations' head, or say how to get it there."""
    from service.store.db import create_pool
    from service.store.migrate import current_revisions, head_revisions

    async def main() -> T:
        pool = await create_pool(url, min_size=1, max_size=1)
        try:
            if schema:
                async with pool.acquire() as conn:
                    current = await current_revisions(conn)
                if current != head_revisions():
                    state = "has no genstream schema" if not current else "is not at head"
                    raise SchemaMissing(
                        f"the database {state}: run `python -m service migrate` first"
                    )
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


@contextmanager
def output(path: Path | None) -> Iterator[TextIO]:
    if path is None:
        yield sys.stdout
        return
    with open(path, "w") as out:
        yield out


# --- the commands ----------------------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from service.server import serve

    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    serve(settings, migrated_database(settings), host=host, port=port)
    return EXIT_OK


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    from service.server import run_worker

    run_worker(settings, migrated_database(settings))
    return EXIT_OK


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    migrated_database(settings)
    print("database at head", file=sys.stderr)
    return EXIT_OK


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from service.access.keys import create_key

    url = migrated_database(settings)
    print(with_pool(url, lambda pool: create_key(pool, args.owner, is_admin=args.admin)))
    return EXIT_OK


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from service.operations.replay import replay

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    with_pool(
        database_url(settings),
        lambda pool: replay(
            pool, args.generation_id, write, after=args.after, pace=args.pace, speed=args.speed
        ),
    )
    return EXIT_OK


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from service.operations.transfer import export_lines

    async def work(pool: Pool) -> None:
        lines = export_lines(pool, args.generation_ids or None, args.since, args.until)
        # The first line is read before the output is opened: an unknown id fails the
        # command without leaving an empty file behind.
        first = await anext(lines, None)
        with output(args.output) as out:
            if first is not None:
                out.write(first)
            async for line in lines:
                out.write(line)

    with_pool(database_url(settings), work)
    return EXIT_OK


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from service.operations.transfer import import_lines

    url = migrated_database(settings)
    source = sys.stdin if args.file is None else open(args.file)  # noqa: SIM115 (closed below)
    try:
        result = with_pool(url, lambda pool: import_lines(pool, source))
    finally:
        if source is not sys.stdin:
            source.close()
    print(
        f"imported {len(result.stored)} generation(s); "
        f"skipped {len(result.skipped)} already present",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from service.operations import rebuild

    url = database_url(settings)
    if not args.check:
        changed = with_pool(url, rebuild.rebuild)
        print(f"rebuilt {changed} generation row(s) from their events")
        return EXIT_OK
    differences = with_pool(url, rebuild.find_differences)
    for d in differences:
        print(f"{d.generation_id} {d.column}: row says {d.projected!r}, log says {d.rebuilt!r}")
    print(f"{len(differences)} difference(s)", file=sys.stderr)
    return EXIT_FAILED if differences else EXIT_OK


def cmd_db_stop(settings: Settings, _args: argparse.Namespace) -> int:
    from service.store.embedded import EmbeddedCluster

    EmbeddedCluster(settings.data_dir / "postgres").stop()
    return EXIT_OK


# --- arguments -------------------------------------------------------------------------------


def owner_name(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("an owner must not be blank")
    return value


def speed(value: str) -> float:
    from service.streams.pacing import REPLAY_SPEED_MAX

    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 < number <= REPLAY_SPEED_MAX:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most {REPLAY_SPEED_MAX:g}")
    return number


def non_negative(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise argparse.ArgumentTypeError(f"not a non-negative integer: {value!r}")
    return int(value)


def port(value: str) -> int:
    number = non_negative(value)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value!r}")
    return number


def generation_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a generation id (a UUID): {value!r}") from None


def timestamp(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None


def parser(prog: str = "genstream") -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog=prog,
        description="genstream: event-sourced LLM code generation, streamed over SSE.",
        epilog="Exit codes: 0 done, 1 failed or not found, 2 usage, 130 interrupted. "
        "Every command uses DATABASE_URL, or the embedded cluster under GENSTREAM_DATA_DIR.",
    )
    root.add_argument("--version", action="version", version=f"genstream {version('genstream')}")
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        summary: str,
        description: str,
        run: Callable[[Settings, argparse.Namespace], int],
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=summary, description=description)
        sub.set_defaults(run=run)
        return sub

    serve = command(
        "serve",
        "the HTTP API, the streams and an in-process worker",
        "Migrate the database, then serve the HTTP API and the SSE streams on HOST:PORT "
        "(environment variables HOST and PORT, default 127.0.0.1:8000) with an in-process "
        "worker (GENSTREAM_WORKER_CONCURRENCY runs at once; 0 disables it). SIGTERM stops "
        "claiming, hands running runs to other workers and ends every stream.",
        cmd_serve,
    )
    serve.add_argument("--host", metavar="HOST", help="listen address (overrides HOST)")
    serve.add_argument("--port", type=port, metavar="PORT", help="listen port (overrides PORT)")
    command(
        "worker",
        "run generations only, no HTTP",
        "Migrate the database, then claim and run queued generations "
        "(GENSTREAM_WORKER_CONCURRENCY at once, at least 1) until SIGTERM or Ctrl-C.",
        cmd_worker,
    )
    command(
        "migrate",
        "apply the Alembic migrations up to head",
        "Bring the database's schema to the newest migration; idempotent.",
        cmd_migrate,
    )
    keys = commands.add_parser(
        "keys", help="API keys", description="Manage API keys."
    ).add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = keys.add_parser(
        "create",
        help="print one new API key, alone on stdout",
        description="Create an API key for OWNER and print it, alone on stdout. It is shown "
        "this once: only its SHA-256 digest is stored.",
    )
    create.add_argument(
        "--owner",
        required=True,
        type=owner_name,
        help="who the key (and its generations) belong to",
    )
    create.add_argument("--admin", action="store_true", help="may read the global event feed")
    create.set_defaults(run=cmd_keys_create)
    replay = command(
        "replay",
        "print a generation's stored events as JSON lines",
        "Print a generation's events after seq N, one JSON object per line, exactly as the "
        "stream sends them.",
        cmd_replay,
    )
    replay.add_argument("generation_id", type=generation_id, metavar="GENERATION_ID")
    replay.add_argument("--after", type=non_negative, default=0, metavar="N", help="after seq N")
    replay.add_argument(
        "--pace",
        choices=("live", "recorded"),
        default="live",
        help="live (default): at once, as the stream's pace=live; recorded: each event after "
        "the pause that preceded it (a finished generation), as the stream's pace=recorded",
    )
    replay.add_argument(
        "--speed", type=speed, default=1.0, metavar="F", help="with --pace recorded: F times faster"
    )
    export = command(
        "export",
        "write generations as NDJSON",
        "Write generations (all of them, the ids given, or those created in a range) as "
        "NDJSON: a generation line, its events in seq order, then its files.",
        cmd_export,
    )
    export.add_argument("generation_ids", nargs="*", type=generation_id, metavar="GENERATION_ID")
    export.add_argument("--since", type=timestamp, help="created at or after (ISO 8601)")
    export.add_argument("--until", type=timestamp, help="created before (ISO 8601)")
    export.add_argument("--output", "-o", type=Path, metavar="FILE", help="a file, not stdout")
    load = command(
        "import",
        "store the generations of an export",
        "Store every generation of an export (FILE, or stdin), each whole or not at all; a "
        "generation already present is skipped, so importing twice changes nothing.",
        cmd_import,
    )
    load.add_argument("file", nargs="?", type=Path, metavar="FILE")
    rebuild = command(
        "rebuild",
        "recompute the generation rows from their events",
        "Recompute every generation row's projected state (status, stage, progress, last_seq, "
        "error, timestamps) from its events, and rewrite the rows that differ.",
        cmd_rebuild,
    )
    rebuild.add_argument(
        "--check", action="store_true", help="only print the differences (exit 1 if any)"
    )
    db = commands.add_parser(
        "db", help="the embedded PostgreSQL cluster", description="The embedded cluster."
    ).add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db.add_parser(
        "stop",
        help="stop the embedded cluster under GENSTREAM_DATA_DIR",
        description="Stop the embedded cluster that commands start when DATABASE_URL is unset.",
    ).set_defaults(run=cmd_db_stop)
    return root


# --- the one place errors become messages ----------------------------------------------------


def settings_problems(error: ValidationError) -> list[str]:
    """Each bad environment value, named as the user set it (GENSTREAM_WORKER_CONCURRENCY,
    not worker_concurrency)."""
    problems = []
    for problem in error.errors():
        field = str(problem["loc"][0]) if problem["loc"] else ""
        name = environment_variable(field) if field in Settings.model_fields else field
        problems.append(f"{name}={problem.get('input')!r}: {problem['msg']}")
    return problems


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    if prog is None:
        invoked = os.path.basename(sys.argv[0])
        prog = "python -m service" if invoked in ("__main__.py", "-m") else "genstream"
    args = parser(prog).parse_args(argv)  # exits 2 with argparse's message on a usage error
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        settings = Settings()
    except ValidationError as exc:
        for problem in settings_problems(exc):
            print(f"{prog}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        code: int = args.run(settings, args)
    except GenstreamError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except UnicodeDecodeError as exc:
        print(f"{prog}: error: the input is not UTF-8 text ({exc.reason})", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # a file named on the command line: missing, unreadable...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{prog}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code
