"""What each command does: resolve the database, call one operation, print its outcome.

Every import of what a command runs happens inside it, so that ``--help`` stays quick.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, TextIO, TypeVar

from service.errors import GenstreamError
from service.settings import Settings

if TYPE_CHECKING:
    from service.store.db import Pool
    from service.store.projections import LogDefect
    from service.store.reads import Reads

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

T = TypeVar("T")


class SchemaMissing(GenstreamError):
    """The database has no genstream schema, or an older one than this code needs."""


class UsageError(GenstreamError):
    """A bad environment value the command found itself (exit code 2, like argparse's)."""


# --- the database a command works on ---------------------------------------------------------


def database_url(settings: Settings) -> str:
    """``DATABASE_URL`` if set, else the embedded cluster under ``data_dir`` (started if needed)."""
    if settings.database_url:
        return settings.database_url
    from service.store.embedded import EmbeddedCluster

    return EmbeddedCluster(settings.data_dir / "postgres").start()


def migrated_database(settings: Settings, revision: str = "head") -> str:
    """The database at the migrations' head; migrated, when behind, on PostgreSQL itself
    (``GENSTREAM_DIRECT_URL``), never through a pooler: Alembic's SQLAlchemy driver prepares
    named statements, and a migration that builds an index CONCURRENTLY leaves its
    transaction, which a transaction pooler would split over server connections."""
    from service.store.migrate import upgrade

    url = database_url(settings)
    upgrade(settings.direct_url or url, revision)  # StoreUnavailable: PostgreSQL is away
    return url


def with_pool(
    settings: Settings, url: str, work: Callable[[Pool], Awaitable[T]], *, schema: bool = True
) -> T:
    """Run ``work(pool)`` on a one-connection pool to ``url`` (behind the pooler settings
    name, if any); with ``schema``, first make sure the database is at the migrations' head,
    or say how to get it there."""
    from service.store.db import create_pool
    from service.store.migrate import current_revisions, head_revisions

    async def main() -> T:
        pool = await create_pool(url, min_size=1, max_size=1, pooler=settings.database_pooler)
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


def with_reads(settings: Settings, work: Callable[[Reads], Awaitable[T]]) -> T:
    """``with_pool`` on the primary, and a one-connection pool on ``GENSTREAM_REPLICA_URL``
    when it is set, for commands that only read (export, replay)."""
    from service.store.db import create_pool
    from service.store.reads import Reads

    async def on_primary(pool: Pool) -> T:
        url = settings.replica_url
        replica = (
            await create_pool(url, min_size=0, max_size=1, pooler=settings.database_pooler)
            if url
            else None
        )
        try:
            return await work(Reads(pool, replica, wait_s=settings.replica_wait_s))
        finally:
            if replica is not None:
                await replica.close()

    return with_pool(settings, database_url(settings), on_primary)


@contextmanager
def lines_of(path: Path | None) -> Iterator[Iterable[bytes]]:
    """The lines of FILE, or of stdin, as bytes: each is decoded on its own, so one line that
    is not UTF-8 refuses its generation, not the whole import."""
    if path is None:
        yield sys.stdin.buffer
        return
    with open(path, "rb") as source:
        yield source


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


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from service.store.migrate import revision_known

    if not revision_known(args.to):
        raise UsageError(f"--to {args.to!r} is not a revision of this release (0001 to head)")
    migrated_database(settings, args.to)
    print(f"database at {args.to}", file=sys.stderr)
    return EXIT_OK


def cmd_keys_create(settings: Settings, args: argparse.Namespace) -> int:
    from service.access.keys import Quotas, create_key

    url = migrated_database(settings)
    quotas = Quotas(args.max_active_runs, args.runs_per_minute, args.max_streams)
    key = with_pool(
        settings,
        url,
        lambda pool: create_key(
            pool, args.owner, is_admin=args.admin, expires_in_s=args.expires_in, quotas=quotas
        ),
    )
    print(key)
    return EXIT_OK


def cmd_keys_list(settings: Settings, _args: argparse.Namespace) -> int:
    from service.access.keys import list_keys

    def when(moment: datetime | None) -> str:
        return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")

    def limit(quota: int | None) -> str:
        return "default" if quota is None else str(quota or "none")

    rows = with_pool(settings, database_url(settings), list_keys)
    print(
        "id\towner\tprefix\tadmin\tcreated\texpires\tlast_used\trevoked\t"
        "max_active_runs\truns_per_minute\tmax_streams"
    )
    for row in rows:
        print(
            "\t".join(
                [
                    str(row.id),
                    row.owner,
                    row.prefix,
                    "yes" if row.is_admin else "no",
                    when(row.created_at),
                    when(row.expires_at),
                    when(row.last_used_at),
                    when(row.revoked_at),
                    limit(row.max_active_runs),
                    limit(row.runs_per_minute),
                    limit(row.max_streams),
                ]
            )
        )
    return EXIT_OK


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from service.access.keys import revoke_key

    owner = with_pool(settings, database_url(settings), lambda pool: revoke_key(pool, args.key_id))
    print(f"revoked key {args.key_id} of {owner}", file=sys.stderr)
    return EXIT_OK


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from service.operations.replay import replay

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    with_reads(
        settings,
        lambda reads: replay(
            reads, args.generation_id, write, after=args.after, pace=args.pace, speed=args.speed
        ),
    )
    return EXIT_OK


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from service.operations.transfer import export_lines

    async def work(reads: Reads) -> None:
        lines = export_lines(reads, args.generation_ids or None, args.since, args.until)
        # The first line is read before the output is opened: an unknown id fails the
        # command without leaving an empty file behind.
        first = await anext(lines, None)
        with output(args.output) as out:
            if first is not None:
                out.write(first)
            async for line in lines:
                out.write(line)

    with_reads(settings, work)
    return EXIT_OK


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from service.operations.transfer import KEEP_OWNERS, Action, import_generations

    counts = dict.fromkeys(Action, 0)
    said = {
        Action.IMPORTED: "would import" if args.dry_run else "imported",
        Action.SKIPPED: "would skip" if args.dry_run else "skipped",
    }

    async def work(pool: Pool) -> None:
        owner = KEEP_OWNERS if args.keep_owners else args.owner
        with lines_of(args.file) as lines:
            outcomes = import_generations(pool, lines, owner=owner, dry_run=args.dry_run)
            async for outcome in outcomes:  # each printed as soon as it is decided
                counts[outcome.action] += 1
                named = f" {outcome.generation_id}" if outcome.generation_id else ""
                if outcome.action is Action.REFUSED:
                    print(f"refused{named} line {outcome.line}: {outcome.reason}", flush=True)
                elif outcome.action is Action.SKIPPED:
                    print(f"{said[Action.SKIPPED]}{named}: already present", flush=True)
                else:
                    print(f"{said[Action.IMPORTED]}{named}", flush=True)

    # A dry run writes nothing, not even the schema: like export, it says to migrate first.
    with_pool(
        settings, database_url(settings) if args.dry_run else migrated_database(settings), work
    )
    print(
        f"{'dry run, nothing written: ' if args.dry_run else ''}"
        f"{said[Action.IMPORTED]} {counts[Action.IMPORTED]} generation(s); "
        f"{said[Action.SKIPPED]} {counts[Action.SKIPPED]} already present; "
        f"refused {counts[Action.REFUSED]}",
        file=sys.stderr,
    )
    return EXIT_FAILED if counts[Action.REFUSED] else EXIT_OK


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from service.operations import rebuild

    url = database_url(settings)
    if not args.check:
        changed = with_pool(settings, url, rebuild.rebuild)
        print(f"rebuilt {changed} generation row(s) from their events")
        return EXIT_OK
    from service.operations.audit import describe

    found = with_pool(settings, url, rebuild.check)
    for defect in found.defects:
        print(f"{defect.generation_id} seq {defect.seq}: {log_defect(defect)}")
    for broken in found.chain_breaks:
        print(f"{broken.generation_id} chain: {describe(broken)}")
    for d in found.differences:
        print(f"{d.generation_id} {d.column}: row says {d.projected!r}, log says {d.rebuilt!r}")
    print(
        f"{len(found.defects)} defect(s) in the log, {len(found.chain_breaks)} broken "
        f"chain(s), {len(found.differences)} difference(s)",
        file=sys.stderr,
    )
    failed = found.defects or found.chain_breaks or found.differences
    return EXIT_FAILED if failed else EXIT_OK


def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    from service.operations import audit

    if not args.ids and not args.all:
        raise UsageError("name the generations to check, or --all")
    ids = None if args.all else list(dict.fromkeys(args.ids))
    checked = with_pool(
        settings, database_url(settings), lambda pool: audit.verify_chains(pool, ids)
    )
    for broken in checked.breaks:
        print(f"{broken.generation_id}: {audit.describe(broken)}")
    found = {broken.generation_id for broken in checked.breaks}
    summary = f"checked {checked.generations} generation(s), {checked.events} event(s): " + (
        f"{len(found)} chain(s) broken" if found else "every chain holds"
    )
    if checked.redacted:
        summary += (
            f"; {checked.redacted} redacted event(s) taken on trust (retention changed their "
            "text after it was hashed)"
        )
    missing = (len(ids) - checked.generations) if ids is not None else 0
    if missing > 0:
        summary += f"; {missing} of the named generations have no events (unknown ids?)"
    print(summary, file=sys.stderr)
    return EXIT_FAILED if found or missing > 0 else EXIT_OK


def cmd_retention(settings: Settings, args: argparse.Namespace) -> int:
    from service.operations import retention

    redact = args.redact_after_days or settings.redact_after_days
    drop = args.drop_after_days or settings.drop_after_days
    if redact is None and drop is None:
        raise UsageError(
            "no retention policy: set GENSTREAM_REDACT_AFTER_DAYS and/or "
            "GENSTREAM_DROP_AFTER_DAYS (or --redact-after-days / --drop-after-days)"
        )
    try:
        policy = retention.Policy(redact_after_days=redact, drop_after_days=drop)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    report = with_pool(
        settings,
        database_url(settings),
        lambda pool: retention.apply(pool, policy, dry_run=args.dry_run),
    )
    for line in report.lines():
        print(line)
    if args.dry_run:
        print("dry run: nothing was changed", file=sys.stderr)
    return EXIT_OK


def log_defect(defect: LogDefect) -> str:
    """A defect of a log, in words (after its generation and seq)."""
    match defect.defect:
        case "gap":
            missing = range((defect.other_seq or 0) + 1, defect.seq)
            seqs = f"seq {missing[0]}" if len(missing) == 1 else f"seqs {missing[0]}..{missing[-1]}"
            return f"follows seq {defect.other_seq}: {seqs} missing"
        case "unknown_type":
            return f"type {defect.type!r} is not in the vocabulary"
        case "second_terminal":
            return f"a second terminal event ({defect.type}; the first is seq {defect.other_seq})"
        case "after_terminal":
            return f"{defect.type} after the terminal event at seq {defect.other_seq}"
        case "misplaced_retry":
            return "generation.retried where no failed or cancelled attempt ends right before it"
        case "missing_terminal":
            where = "ends here" if defect.seq else "is empty"
            return f"the log {where} with no terminal event, yet the row says {defect.status}"
    return defect.defect


def cmd_db_stop(settings: Settings, _args: argparse.Namespace) -> int:
    from service.store.embedded import EmbeddedCluster

    EmbeddedCluster(settings.data_dir / "postgres").stop()
    return EXIT_OK
