"""The command line's grammar: every command, its arguments and their checks.

A wrong argument is caught here, by argparse, and ends the command with exit code 2 and
argparse's one-line message; the checks below make each such message name what to fix.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from importlib.metadata import version
from pathlib import Path
from uuid import UUID

from service.cli.commands import (
    cmd_audit_verify,
    cmd_db_stop,
    cmd_export,
    cmd_import,
    cmd_keys_create,
    cmd_keys_list,
    cmd_keys_revoke,
    cmd_migrate,
    cmd_rebuild,
    cmd_replay,
    cmd_retention,
    cmd_serve,
    cmd_worker,
)
from service.cli.follow import cmd_follow
from service.settings import Settings


def owner_name(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("an owner must not be blank")
    return value


def speed(value: str) -> float:
    from service.streams.pacing import REPLAY_SPEED_MAX, REPLAY_SPEED_MIN

    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not REPLAY_SPEED_MIN <= number <= REPLAY_SPEED_MAX:  # NaN compares false: refused too
        raise argparse.ArgumentTypeError(
            f"must be from {REPLAY_SPEED_MIN:g} to {REPLAY_SPEED_MAX:g}, got {value}"
        )
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


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(value: str) -> float:
    """Seconds: ``3600``, ``90m``, ``12h``, ``30d``."""
    number, unit = (value[:-1], value[-1]) if value[-1:] in DURATION_UNITS else (value, "s")
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a duration (like 3600, 90m, 12h, 30d): {value!r}"
        ) from None
    if not 0 < seconds < 100 * 365 * 86400:
        raise argparse.ArgumentTypeError(f"must be positive and under 100 years: {value!r}")
    return seconds


def days(value: str) -> float:
    """Days, positive: ``30``, ``0.5``."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {value!r}") from None
    if not 0 < number < 100 * 365:  # NaN compares false: refused too
        raise argparse.ArgumentTypeError(f"must be positive and under 100 years: {value!r}")
    return number


def key_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a key id (a UUID from keys list): {value!r}"
        ) from None


def generation_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a generation id (a UUID): {value!r}") from None


def http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {value!r}")
    return value.rstrip("/")


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
    migrate = command(
        "migrate",
        "apply the Alembic migrations up to head",
        "Bring the database's schema to the newest migration; idempotent.",
        cmd_migrate,
    )
    migrate.add_argument(
        "--to",
        metavar="REVISION",
        default="head",
        help="stop at this revision (e.g. 0014, to build the owner index online before 0015: "
        "README, 'The owner index'); default: head",
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
    create.add_argument(
        "--expires-in",
        type=duration,
        metavar="DURATION",
        help="refused after this long: seconds, or a number with s, m, h or d (90d)",
    )
    for quota, setting in (
        ("max-active-runs", "GENSTREAM_OWNER_MAX_ACTIVE_RUNS"),
        ("runs-per-minute", "GENSTREAM_OWNER_RUNS_PER_MINUTE"),
        ("max-streams", "GENSTREAM_OWNER_MAX_STREAMS"),
    ):
        create.add_argument(
            f"--{quota}",
            type=non_negative,
            metavar="N",
            help=f"this key's own quota instead of {setting} (0: no limit)",
        )
    create.set_defaults(run=cmd_keys_create)
    keys.add_parser(
        "list",
        help="every key: owner, prefix, dates, quotas (never the secret)",
        description="List every API key, newest first, one per line: id, owner, the key's "
        "first characters, admin, created, expires, last used (to the minute), revoked, and its "
        "own quotas. The key itself is never stored, so never shown.",
    ).set_defaults(run=cmd_keys_list)
    revoke = keys.add_parser(
        "revoke",
        help="refuse a key from now on, in every process",
        description="Revoke the key KEY_ID (from `keys list`): every process refuses it from "
        "its next request on, and the stream tokens issued through it stop working.",
    )
    revoke.add_argument("key_id", type=key_id, metavar="KEY_ID")
    revoke.set_defaults(run=cmd_keys_revoke)
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
    follow = command(
        "follow",
        "print a generation's events live, from a running server",
        "Follow a generation on a running genstream server and print each event as it "
        "arrives, to the terminal event: a line per event (llm.delta folded into one line per "
        "run of them), or with --json each event's JSON exactly as the stream sent it. "
        "Resumes by itself across dropped connections and restarts of the server or its "
        "database. The API key is read from GENSTREAM_API_KEY only (never a flag: keys stay "
        "out of shell history and process lists); the server is --url, else GENSTREAM_URL, "
        "else http://127.0.0.1:8000. Exits 0 when the generation succeeded, 1 when it failed, "
        "was cancelled or is not found, 2 when the key is missing or refused.",
        cmd_follow,
    )
    follow.add_argument("generation_id", type=generation_id, metavar="GENERATION_ID")
    follow.add_argument("--after", type=non_negative, default=0, metavar="N", help="after seq N")
    follow.add_argument(
        "--json", action="store_true", help="each event's JSON, one per line, as sent"
    )
    follow.add_argument(
        "--url",
        type=http_url,
        help="the server (overrides GENSTREAM_URL; default http://127.0.0.1:8000)",
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
        "check and store the generations of an export",
        "Check every generation of an export (FILE, or stdin) before writing any of it, store "
        "each one whole or not at all, and print what became of each: imported, skipped "
        "(already present, so importing twice changes nothing) or refused, with the line at "
        "fault and why (exit 1 if any was refused). Exactly one of --owner and --keep-owners.",
        cmd_import,
    )
    load.add_argument("file", nargs="?", type=Path, metavar="FILE")
    owners = load.add_mutually_exclusive_group(required=True)
    owners.add_argument(
        "--owner",
        type=owner_name,
        metavar="NAME",
        help="the owner of every imported generation, whatever the export says",
    )
    owners.add_argument(
        "--keep-owners",
        action="store_true",
        help="keep the owners the export names (a trusted migration between genstreams)",
    )
    load.add_argument(
        "--dry-run",
        action="store_true",
        help="check and report only; write nothing (the schema must be at head already)",
    )
    retention = command(
        "retention",
        "redact and drop old runs, as the retention settings say",
        "Apply the retention policies once: runs finished more than "
        "GENSTREAM_REDACT_AFTER_DAYS ago keep every event's skeleton, their model text, "
        "checks' output and file contents replaced by a marker; runs finished more than "
        "GENSTREAM_DROP_AFTER_DAYS ago are dropped whole (a period's partition at once when "
        "every run in it is that old). Run it from cron or a systemd timer; an interrupted "
        "pass loses nothing and the next goes on.",
        cmd_retention,
    )
    retention.add_argument(
        "--dry-run",
        action="store_true",
        help="do the work in transactions that are rolled back: exact counts, nothing changed",
    )
    retention.add_argument(
        "--redact-after-days", type=days, metavar="N", help="overrides the setting"
    )
    retention.add_argument(
        "--drop-after-days", type=days, metavar="M", help="overrides the setting"
    )
    rebuild = command(
        "rebuild",
        "recompute the generation rows from their events",
        "Recompute every generation row's projected state (status, stage, progress, last_seq, "
        "error, timestamps) from its events, and rewrite the rows that differ. --check writes "
        "nothing: it checks each log itself (seq gaps, unknown types, events after the "
        "terminal one, a finished row without one) and prints every defect and every row that "
        "differs from its log.",
        cmd_rebuild,
    )
    rebuild.add_argument(
        "--check",
        action="store_true",
        help="only print the log's defects and the rows' differences (exit 1 if any)",
    )
    audit = commands.add_parser(
        "audit", help="prove the log unaltered", description="Check the log's chain hashes."
    ).add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_verify = audit.add_parser(
        "verify",
        help="recompute the chain hash of every event of some or all generations",
        description="Recompute every event's chain hash from its stored text and the hash "
        "before it, and name the first seq of each generation where the chain breaks: an "
        "event altered, missing, or a log that ends early. Writes nothing; exit 1 if any "
        "chain breaks (or a named generation has no events).",
    )
    audit_verify.add_argument(
        "ids", nargs="*", type=generation_id, metavar="ID", help="generations to check"
    )
    audit_verify.add_argument("--all", action="store_true", help="check every generation")
    audit_verify.set_defaults(run=cmd_audit_verify)
    db = commands.add_parser(
        "db", help="the embedded PostgreSQL cluster", description="The embedded cluster."
    ).add_subparsers(dest="db_command", required=True, metavar="ACTION")
    db.add_parser(
        "stop",
        help="stop the embedded cluster under GENSTREAM_DATA_DIR",
        description="Stop the embedded cluster that commands start when DATABASE_URL is unset.",
    ).set_defaults(run=cmd_db_stop)
    return root
