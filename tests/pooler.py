"""A real PgBouncer (Debian's, ``make pooler``) in transaction mode, in front of the tests'
PostgreSQL.

It is started from the same ``pgbouncer.ini`` the README shows (``CONFIG``), with the test's
paths and ports filled in: every database of the server through one wildcard entry (each test
clones its own), SCRAM towards clients and towards PostgreSQL, and a pool of ``POOL_SIZE``
server connections per database: fewer than genstream's pool has clients, so that anything
that relied on keeping its server connection between two transactions would meet another's.

PgBouncer refuses to run as root: then it runs as the ``postgres`` user, as the embedded
cluster does, in a folder of its own that user owns.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from service.store.db import asyncpg_dsn
from service.store.embedded import find_bindir
from tests.processes import free_port

POOL_SIZE = 2
START_TIMEOUT_S = 10.0

# The README's "Behind PgBouncer" file; {braces} are what a deployment (or the test) fills in.
CONFIG = """\
[databases]
; every database, on PostgreSQL itself (the test clones one per test)
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = {listen_addr}
listen_port = {listen_port}
unix_socket_dir = {run_dir}
pool_mode = transaction
; SCRAM both ways: clients prove the password in the auth_file to PgBouncer, and PgBouncer
; logs in to PostgreSQL with it (or, given the server's verifier, passes the client's proof on)
auth_type = scram-sha-256
auth_file = {auth_file}
; server connections per (database, user): what PostgreSQL's max_connections must hold
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
; no ignore_startup_parameters: genstream sends none with GENSTREAM_DATABASE_POOLER=transaction,
; so one that forgot that setting is refused at start, not broken later by named statements
admin_users = {admin_user}
logfile = {log_file}
pidfile = {pid_file}
"""


@dataclass
class PgBouncer:
    proc: subprocess.Popen[bytes]
    workdir: Path
    port: int
    user: str
    password: str

    @property
    def log_file(self) -> Path:
        return self.workdir / "pgbouncer.log"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def url(self, database_url: str) -> str:
        """``database_url`` (a database on the server behind us) reached through PgBouncer."""
        parts = urlsplit(asyncpg_dsn(database_url))
        netloc = f"{parts.username}:{parts.password}@127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def show(self, what: str) -> list[dict[str, str]]:
        """``SHOW <what>`` on PgBouncer's admin console (``POOLS``, ``STATS``, ``CLIENTS``…), as
        rows. Through psql: the console speaks the simple query protocol only."""
        result = subprocess.run(
            [
                str(find_bindir() / "psql"), "-X", "--csv",
                "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", "pgbouncer",
                "-c", f"SHOW {what}",
            ],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PGPASSWORD": self.password},
            timeout=10,
        )  # fmt: skip
        return list(csv.DictReader(io.StringIO(result.stdout)))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # immediate shutdown: clients are cut
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def pgbouncer_binary() -> str:
    path = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if path is None:
        pytest.fail("the pooler tests need Debian's pgbouncer: `make pooler` installs it")
    return path


def _run_as() -> pwd.struct_passwd | None:
    """PgBouncer refuses root: then the ``postgres`` user runs it (it exists wherever the
    embedded cluster can run as root)."""
    return pwd.getpwnam("postgres") if os.geteuid() == 0 else None


def start_pgbouncer(
    server_url: str, *, pool_size: int = POOL_SIZE, secret: str | None = None
) -> PgBouncer:
    """PgBouncer in transaction mode in front of ``server_url``'s server, for its role;
    ``secret``: what the auth_file holds for it (default: the URL's password, in clear)."""
    binary = pgbouncer_binary()
    server = urlsplit(asyncpg_dsn(server_url))
    if not server.username or not server.password:
        raise RuntimeError("the test server's URL must carry its role and password")
    run_as = _run_as()
    workdir = Path(tempfile.mkdtemp(prefix="genstream-pgbouncer-"))
    port = free_port()
    auth_file = workdir / "userlist.txt"
    # Readable by PgBouncer's user alone: the password in clear, or the server's SCRAM
    # verifier (then PgBouncer passes the client's proof on to PostgreSQL).
    auth_file.write_text(f'"{server.username}" "{secret or server.password}"\n')
    auth_file.chmod(0o600)
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        CONFIG.format(
            server_host=server.hostname or "127.0.0.1",
            server_port=server.port or 5432,
            listen_addr="127.0.0.1",
            listen_port=port,
            run_dir=workdir,
            auth_file=auth_file,
            pool_size=pool_size,
            max_client_conn=500,
            admin_user=server.username,
            log_file=workdir / "pgbouncer.log",
            pid_file=workdir / "pgbouncer.pid",
        )
    )
    if run_as is not None:
        for path in (workdir, auth_file, ini):
            os.chown(path, run_as.pw_uid, run_as.pw_gid)
    proc = subprocess.Popen(
        [binary, str(ini)],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=run_as.pw_uid if run_as else None,
        group=run_as.pw_gid if run_as else None,
        extra_groups=[] if run_as else None,
    )
    bouncer = PgBouncer(proc, workdir, port, server.username, server.password)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _accepts(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            log = bouncer.log()
            bouncer.stop()
            raise RuntimeError(f"pgbouncer did not start (exit {proc.poll()}):\n{log}")
        time.sleep(0.02)
    return bouncer


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@contextlib.contextmanager
def running_pgbouncer(
    server_url: str, *, pool_size: int = POOL_SIZE, secret: str | None = None
) -> Iterator[PgBouncer]:
    bouncer = start_pgbouncer(server_url, pool_size=pool_size, secret=secret)
    try:
        yield bouncer
    finally:
        bouncer.stop()
