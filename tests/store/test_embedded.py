"""The embedded PostgreSQL cluster: real initdb/pg_ctl, data kept across restarts, and no one
but genstream gets in (issue 12, finding 1: every local user used to be a superuser)."""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
from alembic import command

from service.access import keys
from service.store.db import asyncpg_dsn, create_pool
from service.store.embedded import (
    EmbeddedCluster,
    EmbeddedError,
    throwaway_cluster,
    trusts_anyone,
)
from service.store.migrate import alembic_config, upgrade
from tests.helpers import execute_as_admin

AS_ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root, to act as another OS user (nobody)"
)


def postmaster_pid(cluster: EmbeddedCluster) -> int:
    return int((cluster.pgdata / "postmaster.pid").read_text().splitlines()[0])


async def query(url: str, sql: str) -> object:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def port_of(url: str) -> str:
    return str(urlsplit(url).port)


def new_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="genstream-test-"))
    root.chmod(0o711)  # as throwaway_cluster does: the postgres user must pass through
    return root


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmbeddedCluster]:
    """A cluster set up as ``make run`` sets up its own (the role may not CREATE DATABASE)."""
    cluster = EmbeddedCluster(new_root(), settings={"fsync": "off"})
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


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


# --- who gets in ------------------------------------------------------------------------------


def as_nobody(*command: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    """``command`` run as the OS user nobody, with an environment of its own."""
    nobody = pwd.getpwnam("nobody")
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"}
    if password is not None:
        env["PGPASSWORD"] = password
    setpriv = [
        "setpriv", f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups", "--",
    ]  # fmt: skip
    return subprocess.run(
        [*setpriv, *command], env=env, capture_output=True, text=True, cwd="/", timeout=60
    )


@AS_ROOT_ONLY
def test_another_os_user_gets_in_neither_over_tcp_nor_through_the_socket(
    cluster: EmbeddedCluster,
) -> None:
    url = cluster.start()
    assert cluster.bindir is not None
    psql = [str(cluster.bindir / "psql"), "-X", "-w", "-A", "-t", "-c", "SELECT current_user"]
    tcp = ["-h", "127.0.0.1", "-p", port_of(url)]

    no_password = as_nobody(*psql, *tcp, "-U", "genstream", "-d", "genstream")
    assert no_password.returncode != 0
    assert "no password supplied" in no_password.stderr
    guessed = as_nobody(*psql, *tcp, "-U", "genstream", "-d", "genstream", password="genstream")
    assert guessed.returncode != 0
    assert "password authentication failed" in guessed.stderr
    superuser = as_nobody(*psql, *tcp, "-U", "postgres", "-d", "postgres", password="")
    assert superuser.returncode != 0
    assert "no pg_hba.conf entry" in superuser.stderr

    socket = as_nobody(*psql, "-h", str(cluster.socket_dir), "-p", port_of(url), "-U", "postgres")
    assert socket.returncode != 0
    assert "Permission denied" in socket.stderr
    steal = as_nobody("cat", str(cluster.password_file))
    assert steal.returncode != 0
    assert "Permission denied" in steal.stderr

    # The control: the same user and command, with the password, gets in.
    password = urlsplit(url).password
    admitted = as_nobody(*psql, *tcp, "-U", "genstream", "-d", "genstream", password=password)
    assert (admitted.returncode, admitted.stdout.strip()) == (0, "genstream"), admitted.stderr


async def test_the_service_role_owns_its_database_and_is_no_superuser(
    cluster: EmbeddedCluster,
) -> None:
    url = await asyncio.to_thread(cluster.start)
    await asyncio.to_thread(upgrade, url)  # the migrations need no more than ownership

    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        role = await conn.fetchrow(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
            "FROM pg_roles WHERE rolname = current_user"
        )
        assert role is not None
        assert not any(role.values()), dict(role)
        signals = "SELECT pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')"
        assert await conn.fetchval(signals) is False
        owner = "SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database()"
        assert await conn.fetchval(owner) == "genstream"

        await conn.execute("CREATE TABLE loot (line text)")
        for attempt in (
            "COPY loot FROM PROGRAM 'id'",
            "COPY loot TO '/tmp/loot'",
            "SELECT pg_read_file('/etc/passwd')",
            "CREATE ROLE intruder SUPERUSER LOGIN PASSWORD 'x'",
            "ALTER ROLE genstream SUPERUSER",
            "CREATE DATABASE elsewhere",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(attempt)
    finally:
        await conn.close()


async def test_the_password_is_kept_0600_and_replaced_once_anyone_else_could_read_it(
    cluster: EmbeddedCluster,
) -> None:
    url = await asyncio.to_thread(cluster.start)
    assert cluster.password_file.read_text().strip() == urlsplit(url).password
    assert (mode(cluster.password_file), cluster.password_file.stat().st_uid) == (
        0o600,
        os.geteuid(),
    )
    assert (mode(cluster.root), mode(cluster.socket_dir), mode(cluster.pgdata)) == (
        0o711,
        0o700,
        0o700,
    )
    assert not trusts_anyone((cluster.pgdata / "pg_hba.conf").read_text())

    cluster.password_file.chmod(0o644)
    replaced = await asyncio.to_thread(cluster.start)

    assert replaced != url
    assert mode(cluster.password_file) == 0o600
    assert await query(replaced, "SELECT current_user") == "genstream"
    with pytest.raises(asyncpg.InvalidPasswordError):
        await query(url, "SELECT 1")


@AS_ROOT_ONLY
def test_a_root_directory_someone_else_owns_is_refused() -> None:
    root = new_root()
    nobody = pwd.getpwnam("nobody")
    os.chown(root, nobody.pw_uid, nobody.pw_gid)  # say, /var/tmp/genstream-<hash> taken first
    try:
        with pytest.raises(EmbeddedError, match=f"belongs to uid {nobody.pw_uid}"):
            EmbeddedCluster(root).start()
        assert not (root / "pg").exists()
    finally:
        shutil.rmtree(root)


# --- a cluster made by an older genstream -----------------------------------------------------


async def old_genstream_writes_a_key(old_url: str) -> None:
    pool = await create_pool(old_url, min_size=1, max_size=1)
    try:
        await keys.create_key(pool, "before-upgrade")
    finally:
        await pool.close()


def make_old_cluster(cluster: EmbeddedCluster) -> str:
    """What genstream made before issue 12: every local connection trusted, and the role it
    connects as, genstream, the bootstrap superuser. Migrated, with a key in it."""
    for directory in (cluster.pgdata, cluster.socket_dir):
        directory.mkdir(mode=0o700)
        cluster._chown(directory)
    cluster._run(
        [
            cluster._bin("initdb"), "-D", str(cluster.pgdata), "-U", "genstream", "--auth=trust",
            "--encoding=UTF8", "--no-locale", "--no-instructions",
        ]
    )  # fmt: skip
    with open(cluster.pgdata / "postgresql.auto.conf", "a") as conf:
        conf.write("fsync = 'off'\n")
    port = cluster._start()
    asyncio.run(
        execute_as_admin(
            f"postgresql://genstream@127.0.0.1:{port}/postgres", "CREATE DATABASE genstream"
        )
    )
    old_url = f"postgresql://genstream@127.0.0.1:{port}/genstream"
    upgrade(old_url)
    asyncio.run(old_genstream_writes_a_key(old_url))
    return old_url


@pytest.mark.parametrize("found", ["running", "stopped"])
def test_a_cluster_made_by_an_older_genstream_is_upgraded_in_place(
    found: str, capfd: pytest.CaptureFixture[str]
) -> None:
    cluster = EmbeddedCluster(new_root())
    try:
        old_url = make_old_cluster(cluster)
        assert trusts_anyone((cluster.pgdata / "pg_hba.conf").read_text())
        if found == "stopped":
            cluster.stop()

        url = cluster.start()

        assert "upgraded the embedded cluster" in capfd.readouterr().err
        assert not trusts_anyone((cluster.pgdata / "pg_hba.conf").read_text())
        with pytest.raises(asyncpg.InvalidPasswordError):
            asyncio.run(query(old_url, "SELECT 1"))
        assert asyncio.run(query(url, "SELECT rolname FROM pg_roles WHERE oid = 10")) == "postgres"
        assert (
            asyncio.run(query(url, "SELECT rolsuper FROM pg_roles WHERE rolname = 'genstream'"))
            is False
        )
        owned_by_others = (
            "SELECT count(*) FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relowner <> 'genstream'::regrole"
        )
        assert asyncio.run(query(url, owned_by_others)) == 0
        assert asyncio.run(query(url, "SELECT owner FROM api_keys")) == "before-upgrade"
        # The service role now owns what the old superuser made: it can take it all down.
        command.downgrade(alembic_config(url), "base")
        upgrade(url)
        assert cluster.start() == url  # once upgraded, starts as any other cluster
    finally:
        cluster.destroy()


async def test_only_the_tests_cluster_lets_the_service_role_end_sessions_in_what_it_drops(
    server_url: str,
) -> None:
    """DROP DATABASE ... WITH (FORCE) in a test's teardown must end an autovacuum worker still
    in the database; that takes pg_signal_backend, which only the throwaway cluster grants."""
    conn = await asyncpg.connect(asyncpg_dsn(server_url))
    try:
        member = await conn.fetchval(
            "SELECT pg_has_role(current_user, 'pg_signal_backend', 'MEMBER')"
        )
        superuser = await conn.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )
    finally:
        await conn.close()
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("a server the tests were given: its roles are its operator's")
    assert member is True
    assert superuser is False
