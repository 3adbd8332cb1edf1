"""A real hot standby of the tests' embedded cluster, made with ``pg_basebackup -R``.

One per test session (``standby`` in conftest.py), started the first time a test asks for it:
a base backup of a small cluster takes about a second, and the standby replays every database
the tests create afterwards, so a test reads its own clone there under the same name. A test
that pauses replay resumes it as it ends (``Standby.paused``), so the next one finds it
streaming.

Replication needs a door the embedded cluster does not open (it serves no standbys of its own):
a ``replication`` line for its superuser over the Unix socket, with the same peer map as its
other socket line. The fixture adds it to the throwaway cluster's pg_hba.conf and reloads,
rather than widening what every embedded cluster accepts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from service.observe import metrics
from service.store.embedded import ADMIN, IDENT_MAP, EmbeddedCluster, _free_port


def answered() -> dict[str, float]:
    """``genstream_replica_reads`` of this process by where the reads were answered."""
    return {
        where: metrics.REPLICA_READS.value(where)
        for where in ("replica", "replica_waited", "primary")
    }


def more(before: dict[str, float]) -> dict[str, float]:
    """What ``answered()`` gained since ``before`` (only what changed)."""
    return {where: n - before[where] for where, n in answered().items() if n != before[where]}


REPLICATION_HBA = f"local   replication  {ADMIN}  peer map={IDENT_MAP}\n"
CAUGHT_UP_TIMEOUT_S = 30.0


@dataclass
class Standby:
    """The standby of ``primary``: its data directory, socket directory and port."""

    primary: EmbeddedCluster
    primary_port: int
    pgdata: Path
    socket_dir: Path
    port: int

    def url(self, primary_url: str) -> str:
        """``primary_url`` (a database on the primary) pointed at the same database here."""
        head, _, database = primary_url.rpartition("/")
        credentials, _, _ = head.rpartition("@")
        return f"{credentials}@127.0.0.1:{self.port}/{database}"

    async def admin(self, on_primary: bool = False) -> asyncpg.Connection[asyncpg.Record]:
        """A superuser session over the Unix socket (peer authentication)."""
        socket_dir = self.primary.socket_dir if on_primary else self.socket_dir
        port = self.primary_port if on_primary else self.port
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
            host=str(socket_dir), port=port, user=ADMIN, database="postgres"
        )
        return conn

    async def caught_up(self, timeout_s: float = CAUGHT_UP_TIMEOUT_S) -> None:
        """Wait until this standby has replayed everything the primary has written so far."""
        primary = await self.admin(on_primary=True)
        standby = await self.admin()
        try:
            target = await primary.fetchval("SELECT pg_current_wal_insert_lsn()")
            deadline = time.monotonic() + timeout_s
            while not await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1", target):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby did not replay up to {target}")
                await asyncio.sleep(0.005)
        finally:
            await primary.close()
            await standby.close()

    @asynccontextmanager
    async def paused(self) -> AsyncIterator[None]:
        """Replay paused (``pg_wal_replay_pause``) inside the block; resumed after it."""
        conn = await self.admin()
        try:
            await conn.execute("SELECT pg_wal_replay_pause()")
            while await conn.fetchval("SELECT pg_get_wal_replay_pause_state()") != "paused":
                await asyncio.sleep(0.005)
            yield
        finally:
            await conn.execute("SELECT pg_wal_replay_resume()")
            await conn.close()

    def stop(self) -> None:
        self.primary._exec(
            [self.primary._bin("pg_ctl"), "-D", str(self.pgdata), "-m", "immediate", "stop"]
        )


def make_standby(primary: EmbeddedCluster, primary_url: str) -> Standby:
    """Open the replication door, take a base backup with ``-R`` (it writes standby.signal and
    primary_conninfo), and start it on a free port; returns once it accepts connections."""
    primary_port = int(primary_url.rpartition(":")[2].split("/")[0])
    hba = primary.pgdata / "pg_hba.conf"
    if REPLICATION_HBA not in hba.read_text():
        with open(hba, "a") as handle:
            handle.write(REPLICATION_HBA)
        primary._psql(primary_port, ADMIN, "postgres", "SELECT pg_reload_conf();")
    pgdata, socket_dir = primary.root / "standby", primary.root / "standby-run"
    for directory in (pgdata, socket_dir):
        directory.mkdir(mode=0o700)
        primary._chown(directory)
    primary._run(
        [
            primary._bin("pg_basebackup"),
            "-h", str(primary.socket_dir), "-p", str(primary_port), "-U", ADMIN,
            "-D", str(pgdata),
            "-R",  # standby.signal, and primary_conninfo pointing back here
            "-X", "stream",
            "-c", "fast",  # an immediate checkpoint: no waiting for the next one
        ]
    )  # fmt: skip
    port = _free_port()
    options = f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c hot_standby=on"
    log_file = pgdata / "standby.log"  # where the cluster's OS user may write
    primary._run(
        [
            primary._bin("pg_ctl"),
            "-D", str(pgdata),
            "-l", str(log_file),
            "-o", options,
            "-w", "-t", "60",
            "start",
        ]
    )  # fmt: skip
    return Standby(primary, primary_port, pgdata, socket_dir, port)
