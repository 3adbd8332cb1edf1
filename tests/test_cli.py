"""The command line, run as real subprocesses against the test database."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import httpx
import pytest

from service.access import keys
from service.errors import Unauthorized
from service.settings import PROJECT_ROOT
from service.store.db import Pool, asyncpg_dsn, create_pool
from service.store.migrate import current_revisions, head_revisions
from tests.conftest import KeyFactory, SpawnServe
from tests.helpers import SPEC, exported, finished_generation, ndjson, stored_json
from tests.processes import free_port

CLI_TIMEOUT_S = 60
# What the shell running the tests may have set that would change what a command does.
INHERITED_NOT = frozenset({"DATABASE_URL", "GENSTREAM_API_KEY", "GENSTREAM_URL"})


async def cli(
    *args: str,
    database_url: str | None,
    env: dict[str, str] | None = None,
    program: Sequence[str] = (sys.executable, "-m", "service"),
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key not in INHERITED_NOT}
    if database_url is not None:
        environment["DATABASE_URL"] = database_url
    environment.update(env or {})
    return await asyncio.to_thread(
        subprocess.run,
        [*program, *args],
        cwd=PROJECT_ROOT,
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


async def test_help_lists_every_command() -> None:
    result = await cli("--help", database_url=None)
    assert result.returncode == 0, result.stderr
    for command in ("serve", "worker", "migrate", "keys", "replay"):
        assert command in result.stdout


async def test_keys_create_prints_only_a_key_that_authenticates_its_owner(
    database_url: str, pool: Pool
) -> None:
    result = await cli("keys", "create", "--owner", "bob", database_url=database_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    key = lines[0]
    assert result.stdout == key + "\n"
    assert key.strip() == key
    assert key.startswith(keys.KEY_PREFIX)
    owner = await keys.authenticate(pool, key)
    assert owner.owner == "bob"
    assert owner.is_admin is False


async def test_migrate_to_stops_at_a_revision_and_refuses_an_unknown_one(
    empty_database_url: str,
) -> None:
    stopped = await cli("migrate", "--to", "0014", database_url=empty_database_url)
    assert stopped.returncode == 0, stopped.stderr
    assert "database at 0014" in stopped.stderr
    conn = await asyncpg.connect(asyncpg_dsn(empty_database_url))
    try:
        assert await current_revisions(conn) == frozenset({"0014"})
    finally:
        await conn.close()
    unknown = await cli("migrate", "--to", "9999", database_url=empty_database_url)
    assert_user_error(unknown, 2, "--to '9999' is not a revision of this release")


async def test_migrate_brings_an_empty_database_to_head_and_is_idempotent(
    empty_database_url: str,
) -> None:
    first = await cli("migrate", database_url=empty_database_url)
    assert first.returncode == 0, first.stderr
    second = await cli("migrate", database_url=empty_database_url)
    assert second.returncode == 0, second.stderr
    conn = await asyncpg.connect(asyncpg_dsn(empty_database_url))
    try:
        assert await current_revisions(conn) == head_revisions()
        assert await conn.fetchval("SELECT to_regclass('generation_events') IS NOT NULL")
    finally:
        await conn.close()


async def test_replay_prints_the_stored_events_as_json_lines(database_url: str, pool: Pool) -> None:
    generation_id = await finished_generation(pool)
    expected = await stored_json(pool, generation_id)
    assert len(expected) == 5

    result = await cli("replay", str(generation_id), database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    assert result.stdout.splitlines() == expected
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert [event["seq"] for event in events] == [1, 2, 3, 4, 5]
    assert events[-1]["type"] == "generation.succeeded"


async def test_replay_after_n_skips_the_first_n_events(database_url: str, pool: Pool) -> None:
    generation_id = await finished_generation(pool)
    expected = await stored_json(pool, generation_id)

    result = await cli("replay", str(generation_id), "--after", "2", database_url=database_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected[2:]
    assert [json.loads(line)["seq"] for line in result.stdout.splitlines()] == [3, 4, 5]


async def test_replay_of_an_unknown_generation_fails_with_a_clear_message(
    database_url: str,
) -> None:
    unknown = uuid4()
    result = await cli("replay", str(unknown), database_url=database_url)
    assert result.returncode != 0
    assert result.stdout == ""
    assert f"generation {unknown} not found" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


async def test_export_then_import_moves_a_generation_to_another_database(
    database_url: str, other_database_url: str, pool: Pool, tmp_path: Path
) -> None:
    generation_id = await finished_generation(pool)
    expected = await stored_json(pool, generation_id)
    export_file = tmp_path / "export.ndjson"

    exported = await cli(
        "export", str(generation_id), "-o", str(export_file), database_url=database_url
    )
    imported = await cli(
        "import", str(export_file), "--keep-owners", database_url=other_database_url
    )
    again = await cli("import", str(export_file), "--owner", "bob", database_url=other_database_url)

    assert exported.returncode == 0, exported.stderr
    assert imported.returncode == 0, imported.stderr
    assert "imported 1 generation(s); skipped 0 already present; refused 0" in imported.stderr
    assert imported.stdout == f"imported {generation_id}\n"
    assert "imported 0 generation(s); skipped 1" in again.stderr
    assert again.stdout == f"skipped {generation_id}: already present\n"
    other = await create_pool(other_database_url, min_size=1, max_size=1)
    try:
        assert await stored_json(other, generation_id) == expected
    finally:
        await other.close()


async def test_rebuild_check_reports_a_planted_difference_and_rebuild_repairs_it(
    database_url: str, pool: Pool
) -> None:
    generation_id = await finished_generation(pool)
    clean = await cli("rebuild", "--check", database_url=database_url)
    async with pool.acquire() as conn:
        await conn.execute("UPDATE generations SET stage = 'nowhere' WHERE id = $1", generation_id)
    dirty = await cli("rebuild", "--check", database_url=database_url)
    repaired = await cli("rebuild", database_url=database_url)
    after = await cli("rebuild", "--check", database_url=database_url)

    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert dirty.returncode == 1
    assert f"{generation_id} stage: row says 'nowhere', log says 'done'" in dirty.stdout
    assert repaired.returncode == 0
    assert "rebuilt 1 generation row(s)" in repaired.stdout
    assert after.returncode == 0


async def test_rebuild_check_reports_each_defect_of_the_log_with_its_generation_and_seq(
    database_url: str, pool: Pool
) -> None:
    gap, twice, lost_its_end = [await finished_generation(pool) for _ in range(3)]
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM generation_events WHERE generation_id = $1 AND seq = 3", gap
        )
        await conn.execute(
            "INSERT INTO generation_events (generation_id, seq, type, status, stage, progress,"
            " message, payload) VALUES ($1, 6, 'generation.failed', 'failed', 'done', 1, 'x',"
            " '{}'), ($1, 7, 'llm.delta', 'running', 'done', 1, 'y', '{}')",
            twice,
        )
        await conn.execute(
            "DELETE FROM generation_events WHERE generation_id = $1 AND seq = 5", lost_its_end
        )

    result = await cli("rebuild", "--check", database_url=database_url)

    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        f"{gap} seq 4: follows seq 2: seq 3 missing",
        f"{twice} seq 6: a second terminal event (generation.failed; the first is seq 5)",
        f"{twice} seq 7: llm.delta after the terminal event at seq 6",
        f"{lost_its_end} seq 4: the log ends here with no terminal event, yet the row says "
        "succeeded",
    ]
    assert f"{twice} last_seq: row says 5, log says 7" in lines[4:]
    assert result.stderr.splitlines()[-1].startswith("4 defect(s) in the log, ")


async def test_audit_verify_names_the_first_broken_seq_of_each_generation(
    database_url: str, pool: Pool
) -> None:
    edited, deleted, intact = [await finished_generation(pool) for _ in range(3)]
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE generation_events SET message = 'forged' WHERE generation_id = $1 AND seq = 2",
            edited,
        )
        await conn.execute(
            "DELETE FROM generation_events WHERE generation_id = $1 AND seq = 3", deleted
        )

    clean = await cli("audit", "verify", str(intact), database_url=database_url)
    named = await cli("audit", "verify", str(intact), str(edited), database_url=database_url)
    everything = await cli("audit", "verify", "--all", database_url=database_url)
    unknown = await cli("audit", "verify", str(uuid4()), database_url=database_url)
    neither = await cli("audit", "verify", database_url=database_url)

    altered = (
        f"{edited}: seq 2 was altered: its chain hash does not match its content and the hash "
        "before it"
    )
    assert clean.returncode == 0, clean.stderr
    assert clean.stdout == ""
    assert clean.stderr.strip().endswith(": every chain holds")
    assert named.returncode == 1
    assert named.stdout.splitlines() == [altered]
    assert "checked 2 generation(s)" in named.stderr
    assert everything.returncode == 1
    assert sorted(everything.stdout.splitlines()) == sorted([altered, f"{deleted}: seq 3 missing"])
    assert "2 chain(s) broken" in everything.stderr
    assert unknown.returncode == 1
    assert "1 of the named generations have no events" in unknown.stderr
    assert_user_error(neither, 2, "name the generations to check, or --all")


async def test_retention_reports_a_dry_run_then_does_it_and_refuses_a_policy_in_the_wrong_order(
    database_url: str, pool: Pool
) -> None:
    old = await finished_generation(pool, "alice", uuid4())  # the DEFAULT partition's
    redactable = await finished_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE generations SET finished_at = now() - interval '100 days' WHERE id = $1", old
        )
        await conn.execute(
            "UPDATE generations SET finished_at = now() - interval '40 days' WHERE id = $1",
            redactable,
        )
    policy = {"GENSTREAM_REDACT_AFTER_DAYS": "30", "GENSTREAM_DROP_AFTER_DAYS": "90"}

    dry = await cli("retention", "--dry-run", database_url=database_url, env=policy)
    done = await cli("retention", database_url=database_url, env=policy)
    again = await cli("retention", database_url=database_url, env=policy)
    nothing = await cli("retention", database_url=database_url)
    backwards = await cli(
        "retention", "--redact-after-days", "90", "--drop-after-days", "30", database_url=None
    )

    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "redacted: 1 run(s), 1 event(s), 1 file(s), 39 character(s) would be removed",
        "dropped: 1 run(s), 5 event(s) would be gone",
    ]
    assert "dry run: nothing was changed" in dry.stderr
    assert done.returncode == 0, done.stderr
    assert done.stdout == dry.stdout.replace("would be ", "")
    assert again.stdout.splitlines() == [
        "redacted: 0 run(s), 0 event(s), 0 file(s), 0 character(s) removed",
        "dropped: 0 run(s), 0 event(s) gone",
    ]
    assert_user_error(nothing, 2, "no retention policy: set GENSTREAM_REDACT_AFTER_DAYS")
    assert_user_error(backwards, 2, "drop after 30 days comes before redact after 90 days")


async def test_replay_at_the_recorded_pace_prints_the_same_lines(
    database_url: str, pool: Pool
) -> None:
    generation_id = await finished_generation(pool)
    expected = await stored_json(pool, generation_id)

    result = await cli(
        "replay", str(generation_id), "--pace", "recorded", "--speed", "50",
        database_url=database_url,
    )  # fmt: skip
    too_fast = await cli(
        "replay", str(generation_id), "--pace", "recorded", "--speed", "500",
        database_url=database_url,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == expected
    assert too_fast.returncode == 2  # a usage error
    assert "argument --speed: must be from 0.01 to 100, got 500" in too_fast.stderr


def assert_user_error(result: subprocess.CompletedProcess[str], code: int, says: str) -> None:
    """A user's mistake: the documented exit code, its message last on stderr, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert says in result.stderr.splitlines()[-1], result.stderr
    assert result.stdout == ""


async def test_version_names_the_package_version() -> None:
    result = await cli("--version", database_url=None)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"genstream {version('genstream')}"


async def test_every_subcommand_has_a_description_and_serve_names_host_and_port() -> None:
    commands = [
        ["serve"], ["worker"], ["migrate"], ["keys", "create"], ["replay"], ["export"],
        ["import"], ["rebuild"], ["db", "stop"],
    ]  # fmt: skip
    helps = await asyncio.gather(
        *(cli(*command, "--help", database_url=None) for command in commands)
    )
    for command, result in zip(commands, helps, strict=True):
        assert result.returncode == 0, result.stderr
        usage, _, rest = result.stdout.partition("\n\n")
        description = rest.partition("\n\n")[0]
        assert " ".join(command) in usage
        assert not description.startswith(("positional arguments", "options")), command
        assert len(description) > 20, (command, description)
    serve = helps[0].stdout
    assert "HOST" in serve
    assert "PORT" in serve
    assert "--pace {live,recorded}" in helps[4].stdout


async def test_the_console_script_runs_the_same_command_line() -> None:
    script = Path(sys.executable).parent / "genstream"
    assert script.exists(), "pip install -e . installs the `genstream` console script"
    result = await cli("--version", database_url=None, program=[str(script)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"genstream {version('genstream')}"
    unknown = await cli("frobnicate", database_url=None, program=[str(script)])
    assert_user_error(unknown, 2, "invalid choice: 'frobnicate'")
    assert unknown.stderr.startswith("usage: genstream ")


async def test_a_blank_owner_is_a_usage_error(database_url: str) -> None:
    result = await cli("keys", "create", "--owner", " ", database_url=database_url)
    assert_user_error(result, 2, "argument --owner: an owner must not be blank")


async def test_a_bad_environment_value_names_the_variable_in_one_line() -> None:
    result = await cli("migrate", database_url=None, env={"GENSTREAM_WORKER_CONCURRENCY": "-1"})
    assert_user_error(result, 2, "GENSTREAM_WORKER_CONCURRENCY='-1'")
    assert len(result.stderr.splitlines()) == 1, result.stderr
    bad_url = await cli("migrate", database_url="mysql://nope")
    assert_user_error(bad_url, 2, "DATABASE_URL='mysql://nope'")


async def test_bad_arguments_are_usage_errors(database_url: str) -> None:
    cases = [
        (["replay", "not-a-uuid"], "not a generation id"),
        (["replay", str(uuid4()), "--after", "-1"], "argument --after"),
        (["replay", str(uuid4()), "--pace", "stored"], "invalid choice: 'stored'"),
        (["export", "--since", "yesterday"], "not an ISO 8601 time"),
        (["serve", "--port", "70000"], "not a TCP port"),
    ]
    results = await asyncio.gather(*(cli(*args, database_url=database_url) for args, _ in cases))
    for (_, says), result in zip(cases, results, strict=True):
        assert_user_error(result, 2, says)


async def test_commands_that_only_read_say_to_migrate_on_a_fresh_database(
    empty_database_url: str, tmp_path: Path
) -> None:
    export_file = tmp_path / "export.ndjson"
    export_file.write_text("")
    replay, rebuild, check, export, dry_run = await asyncio.gather(
        cli("replay", str(uuid4()), database_url=empty_database_url),
        cli("rebuild", database_url=empty_database_url),
        cli("rebuild", "--check", database_url=empty_database_url),
        cli("export", database_url=empty_database_url),
        cli("import", str(export_file), "--owner", "bob", "--dry-run",
            database_url=empty_database_url),
    )  # fmt: skip
    for result in (replay, rebuild, check, export, dry_run):
        assert_user_error(result, 1, "the database has no genstream schema: run")
        assert "python -m service migrate" in result.stderr
    conn = await asyncpg.connect(asyncpg_dsn(empty_database_url))
    try:
        assert await current_revisions(conn) == frozenset()  # left as it was
    finally:
        await conn.close()


async def test_import_migrates_a_fresh_database_first(
    database_url: str, empty_database_url: str, pool: Pool, tmp_path: Path
) -> None:
    generation_id = await finished_generation(pool)
    export_file = tmp_path / "export.ndjson"
    exported = await cli("export", "-o", str(export_file), database_url=database_url)
    assert exported.returncode == 0, exported.stderr

    imported = await cli(
        "import", str(export_file), "--owner", "bob", database_url=empty_database_url
    )

    assert imported.returncode == 0, imported.stderr
    assert "imported 1 generation(s)" in imported.stderr
    replayed = await cli("replay", str(generation_id), database_url=empty_database_url)
    assert replayed.stdout.splitlines() == await stored_json(pool, generation_id)


async def test_import_of_a_missing_or_unreadable_file_names_it(
    database_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.ndjson"
    binary = tmp_path / "binary.ndjson"
    binary.write_bytes(b"\xff\xfe not utf-8\n")
    garbage = tmp_path / "garbage.ndjson"
    garbage.write_text('{"generation": {"id": "x"}}\nnot json\n')

    results = await asyncio.gather(
        cli("import", str(missing), "--owner", "bob", database_url=database_url),
        cli("import", str(binary), "--owner", "bob", database_url=database_url),
        cli("import", str(garbage), "--owner", "bob", database_url=database_url),
    )

    assert_user_error(results[0], 1, f"No such file or directory: {missing}")
    for result in results[1:]:
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert result.stderr.splitlines()[-1] == (
            "imported 0 generation(s); skipped 0 already present; refused 1"
        )
    assert results[1].stdout.startswith("refused line 1: not UTF-8 text")
    assert results[2].stdout.startswith("refused line 2: not an export line: not JSON")


async def test_import_needs_exactly_one_of_owner_and_keep_owners(
    database_url: str, tmp_path: Path
) -> None:
    export_file = tmp_path / "export.ndjson"
    export_file.write_text("")

    neither, both, blank = await asyncio.gather(
        cli("import", str(export_file), database_url=database_url),
        cli("import", str(export_file), "--owner", "bob", "--keep-owners",
            database_url=database_url),
        cli("import", str(export_file), "--owner", "", database_url=database_url),
    )  # fmt: skip

    assert_user_error(neither, 2, "one of the arguments --owner --keep-owners is required")
    assert_user_error(both, 2, "argument --keep-owners: not allowed with argument --owner")
    assert_user_error(blank, 2, "argument --owner: an owner must not be blank")


async def test_import_reports_each_generation_and_exits_1_if_any_was_refused(
    database_url: str, other_database_url: str, pool: Pool, tmp_path: Path
) -> None:
    good, bad = await finished_generation(pool), await finished_generation(pool)
    records = await exported(pool, good, bad)
    records[7 + 3]["event"]["type"] = "llm.delta\nevent: generation.succeeded"
    records[0]["generation"]["owner"] = "victim"
    export_file = tmp_path / "export.ndjson"
    export_file.write_text("".join(ndjson(records)))

    dry = await cli(  # the export on stdin
        "import", "--owner", "bob", "--dry-run", database_url=other_database_url,
        stdin=export_file.read_text(),
    )  # fmt: skip
    imported = await cli(
        "import", str(export_file), "--owner", "bob", database_url=other_database_url
    )

    refused = (
        f"refused {bad} line 11: event seq 3's type: 'llm.delta\\nevent: generation.succeeded' "
        "is not an event type\n"
    )
    assert dry.returncode == 1, dry.stderr
    assert dry.stdout == f"would import {good}\n{refused}"
    assert dry.stderr.splitlines()[-1] == (
        "dry run, nothing written: would import 1 generation(s); would skip 0 already present; "
        "refused 1"
    )
    assert imported.returncode == 1, imported.stderr
    assert imported.stdout == f"imported {good}\n{refused}"
    assert imported.stderr.splitlines()[-1] == (
        "imported 1 generation(s); skipped 0 already present; refused 1"
    )
    other = await create_pool(other_database_url, min_size=1, max_size=1)
    try:
        async with other.acquire() as conn:
            rows = await conn.fetch("SELECT id, owner FROM generations")
    finally:
        await other.close()
    owners = {row["id"]: row["owner"] for row in rows}
    assert owners == {good: "bob"}


async def test_export_of_an_unknown_id_fails_like_replay_and_writes_nothing(
    database_url: str, pool: Pool, tmp_path: Path
) -> None:
    known = await finished_generation(pool)
    unknown = uuid4()
    output = tmp_path / "out.ndjson"

    export = await cli(
        "export", str(known), str(unknown), "-o", str(output), database_url=database_url
    )
    replay = await cli("replay", str(unknown), database_url=database_url)

    assert_user_error(export, 1, f"no generation {unknown}")
    assert_user_error(replay, 1, f"generation {unknown} not found")
    assert not output.exists()


async def test_an_unreachable_database_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    nowhere = f"postgresql://nobody@127.0.0.1:{free_port()}/none"  # nothing listens there
    replay, migrate = await asyncio.gather(
        cli("replay", str(uuid4()), database_url=nowhere), cli("migrate", database_url=nowhere)
    )
    assert_user_error(replay, 1, "cannot connect to PostgreSQL")
    assert_user_error(migrate, 1, "cannot connect to PostgreSQL")


async def test_a_refused_login_or_a_missing_database_is_one_line_not_a_traceback(
    database_url: str,
) -> None:
    wrong_password = re.sub(r"://([^:@/]+)(:[^@/]*)?@", r"://\1:not-the-password@", database_url)
    no_database = database_url.rsplit("/", 1)[0] + "/no_such_database_here"
    migrate, replay, missing = await asyncio.gather(
        cli("migrate", database_url=wrong_password),
        cli("replay", str(uuid4()), database_url=wrong_password),
        cli("migrate", database_url=no_database),
    )
    assert_user_error(migrate, 1, "PostgreSQL refused the connection: password authentication")
    assert_user_error(replay, 1, "PostgreSQL refused the connection: password authentication")
    assert_user_error(missing, 1, "PostgreSQL refused the connection")
    assert "no_such_database_here" in missing.stderr
    assert "not-the-password" not in migrate.stderr + replay.stderr


async def test_keys_list_shows_every_key_but_never_a_secret_and_revoke_refuses_it(
    database_url: str, pool: Pool
) -> None:
    created = await cli(
        "keys", "create", "--owner", "carol", "--expires-in", "30d", "--max-active-runs", "3",
        "--runs-per-minute", "0", database_url=database_url,
    )  # fmt: skip
    key = created.stdout.strip()
    listed = await cli("keys", "list", database_url=database_url)

    assert created.returncode == 0, created.stderr
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split("\t")[:3] == ["id", "owner", "prefix"]
    key_id, owner, prefix, admin, _, expires, last_used, revoked, active, rate, streams = row.split(
        "\t"
    )
    assert (owner, prefix, admin, last_used, revoked) == ("carol", key[:10], "no", "-", "-")
    assert expires != "-"
    assert (active, rate, streams) == ("3", "none", "default")
    assert key not in listed.stdout

    revoked_result = await cli("keys", "revoke", key_id, database_url=database_url)
    assert revoked_result.returncode == 0, revoked_result.stderr
    assert f"revoked key {key_id} of carol" in revoked_result.stderr
    with pytest.raises(Unauthorized):
        await keys.authenticate(pool, key)
    unknown = await cli("keys", "revoke", str(uuid4()), database_url=database_url)
    assert_user_error(unknown, 1, "no API key")
    bad = await cli("keys", "create", "--owner", "x", "--expires-in", "soon", database_url=None)
    assert_user_error(bad, 2, "not a duration")


# --- follow: a client of a running server ------------------------------------------------------


async def test_follow_without_genstream_api_key_says_to_set_it() -> None:
    missing = await cli("follow", str(uuid4()), database_url=None)
    blank = await cli("follow", str(uuid4()), database_url=None, env={"GENSTREAM_API_KEY": " "})
    for result in (missing, blank):
        assert_user_error(result, 2, "GENSTREAM_API_KEY is not set")
        assert len(result.stderr.splitlines()) == 1, result.stderr


async def test_follow_of_a_server_that_is_not_there_is_one_line() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    by_flag, by_environment = await asyncio.gather(
        cli("follow", str(uuid4()), "--url", nowhere, database_url=None,
            env={"GENSTREAM_API_KEY": "gsk_x"}),
        cli("follow", str(uuid4()), database_url=None,
            env={"GENSTREAM_API_KEY": "gsk_x", "GENSTREAM_URL": nowhere}),
    )  # fmt: skip
    assert_user_error(by_flag, 1, f"cannot reach genstream at {nowhere}")
    assert_user_error(by_environment, 1, f"cannot reach genstream at {nowhere}")
    bad_url = await cli("follow", str(uuid4()), "--url", "localhost:8000", database_url=None)
    assert_user_error(bad_url, 2, "not an http:// or https:// URL")


async def create_run(base_url: str, key: str) -> str:
    async with httpx.AsyncClient(base_url=base_url) as client:
        created = await client.post(
            "/api/generations", json={"spec": SPEC}, headers={"Authorization": f"Bearer {key}"}
        )
    assert created.status_code == 201, created.text
    generation_id: str = created.json()["id"]
    return generation_id


@pytest.mark.slow
async def test_follow_prints_a_run_live_and_exits_0_when_it_succeeds(
    spawn_serve: SpawnServe, make_key: KeyFactory, pool: Pool
) -> None:
    server = await spawn_serve(worker_concurrency="2", offline_delay_s="0.002")
    key = await make_key("alice")
    generation_id = await create_run(server.base_url, key)
    env = {"GENSTREAM_API_KEY": key}
    as_json, as_lines = await asyncio.gather(
        cli("follow", generation_id, "--json", "--url", server.base_url, database_url=None,
            env=env),
        cli("follow", generation_id, database_url=None,
            env={**env, "GENSTREAM_URL": server.base_url}),
    )  # fmt: skip

    assert as_json.returncode == 0, as_json.stderr
    stored = await stored_json(pool, UUID(generation_id))
    assert as_json.stdout.splitlines() == stored, "each event's JSON exactly as the log holds it"
    assert as_lines.returncode == 0, as_lines.stderr
    lines = as_lines.stdout.splitlines()
    deltas = sum('"type":"llm.delta"' in event for event in stored)
    assert deltas > 3
    assert len(lines) < len(stored) - deltas + 10, "deltas are folded, not one line each"
    assert re.search(r"llm\.delta +\d+ deltas?, [\d,]+ characters", as_lines.stdout)
    assert re.search(r"file\.saved +Saved \S+ \(\d+ bytes\)", as_lines.stdout)
    assert re.match(r" +\d+ 100%  generation\.succeeded", lines[-1]), lines[-1]
    assert key not in as_lines.stdout + as_lines.stderr + as_json.stderr


@pytest.mark.slow
async def test_follow_exits_1_when_the_run_it_follows_is_cancelled(
    spawn_serve: SpawnServe, make_key: KeyFactory
) -> None:
    server = await spawn_serve(worker_concurrency="2", offline_delay_s="0.05")
    key = await make_key("alice")
    generation_id = await create_run(server.base_url, key)
    env = {k: v for k, v in os.environ.items() if k not in INHERITED_NOT}
    follow = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service", "follow", generation_id, "--url", server.base_url,
        cwd=PROJECT_ROOT, env={**env, "GENSTREAM_API_KEY": key},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(CLI_TIMEOUT_S):
            assert follow.stdout is not None
            first = await follow.stdout.readline()  # printed live, before the run ends
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                cancelled = await client.post(
                    f"/api/generations/{generation_id}/cancel",
                    headers={"Authorization": f"Bearer {key}"},
                )
            assert cancelled.status_code == 202, cancelled.text
            stdout, stderr = await follow.communicate()
    finally:
        if follow.returncode is None:
            follow.kill()
            await follow.wait()

    assert b"generation.queued" in first
    assert follow.returncode == 1, stderr.decode()
    assert b"generation.cancelled" in stdout.splitlines()[-1]


@pytest.mark.slow
async def test_follow_with_a_refused_key_or_an_unknown_id_says_which_in_one_line(
    spawn_serve: SpawnServe, make_key: KeyFactory
) -> None:
    server = await spawn_serve()
    key = await make_key("alice")
    unknown = str(uuid4())
    refused, missing = await asyncio.gather(
        cli("follow", unknown, "--url", server.base_url, database_url=None,
            env={"GENSTREAM_API_KEY": "gsk_not_a_key"}),
        cli("follow", unknown, "--url", server.base_url, database_url=None,
            env={"GENSTREAM_API_KEY": key}),
    )  # fmt: skip
    assert_user_error(refused, 2, f"{server.base_url} refused GENSTREAM_API_KEY: ")
    assert_user_error(missing, 1, f"generation {unknown} not found")
    assert "gsk_not_a_key" not in refused.stderr
