"""Real PostgreSQL for every test that touches storage.

Where the server comes from, in order: ``TEST_DATABASE_URL`` (a server where we may CREATE
DATABASE); testcontainers when a Docker engine answers; else a throwaway embedded cluster,
started once per run (per pytest-xdist worker: ``make test`` runs the suite in several). The
schema is migrated once into a template database, and every test gets its own clone
(``CREATE DATABASE ... TEMPLATE``): real commits, so NOTIFY fires, and nothing leaks between
tests (NOTIFY channels are per database too).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import httpx
import pytest
import uvicorn
from litestar import Litestar

from service.access import keys
from service.app import create_app
from service.settings import Settings
from service.store.db import Pool, asyncpg_dsn, create_pool
from service.store.embedded import EmbeddedCluster, throwaway_cluster
from service.store.migrate import upgrade
from tests.helpers import Database, execute_as_admin
from tests.processes import ServiceProcess, spawn_service, terminate, wait_ready
from tests.replica import Standby, make_standby

# One template per pytest-xdist worker: on a shared server (TEST_DATABASE_URL) each worker
# drops and re-creates its own (with the embedded cluster, each worker has a cluster anyway).
TEMPLATE = "genstream_template" + (
    f"_{worker}" if (worker := os.environ.get("PYTEST_XDIST_WORKER")) else ""
)

# A run's code is verified only where a test asks for it (``verify`` in the request, or
# ``verify_default``): verifying each of the suite's hundreds of offline runs would cost 1-3 s
# of sandboxed pytest apiece. Set here, so services the suite spawns inherit it as well.
os.environ.setdefault("GENSTREAM_VERIFY_DEFAULT", "off")


def _with_database(url: str, database: str) -> str:
    base, _, _ = asyncpg_dsn(url).rpartition("/")
    return f"{base}/{database}"


def _docker_answers() -> bool:
    if not os.path.exists("/var/run/docker.sock") and not os.environ.get("DOCKER_HOST"):
        return False
    try:
        import docker

        client = docker.from_env(timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def embedded_cluster() -> Iterator[EmbeddedCluster | None]:
    """The throwaway cluster behind ``server_url``; None when the tests use another server."""
    if os.environ.get("TEST_DATABASE_URL") or _docker_answers():
        yield None
        return
    cluster = throwaway_cluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def server_url(embedded_cluster: EmbeddedCluster | None) -> Iterator[str]:
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield url
        return
    if embedded_cluster is not None:
        yield embedded_cluster.start()  # already running: its URL
        return
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:15", driver=None) as container:
        yield container.get_connection_url()


@pytest.fixture(scope="session")
def standby(embedded_cluster: EmbeddedCluster | None, server_url: str) -> Iterator[Standby]:
    """A hot standby of the tests' cluster (``tests/replica.py``), one per session, made the
    first time a test asks; such a test reads its own database there under the same name."""
    if embedded_cluster is None:
        pytest.skip("a standby is made from the embedded cluster only")
    made = make_standby(embedded_cluster, server_url)
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture
async def replica_url(standby: Standby, database_url: str) -> str:
    """The test's database on the standby, replayed up to its creation."""
    await standby.caught_up()
    return standby.url(database_url)


@pytest.fixture
async def replica_pool(replica_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(replica_url, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def template_url(server_url: str) -> str:
    """Runs outside any event loop (Alembic's env.py calls asyncio.run itself)."""
    asyncio.run(execute_as_admin(server_url, f"DROP DATABASE IF EXISTS {TEMPLATE}"))
    asyncio.run(execute_as_admin(server_url, f"CREATE DATABASE {TEMPLATE}"))
    url = _with_database(server_url, TEMPLATE)
    upgrade(url)
    return url


@asynccontextmanager
async def scratch_database(
    server_url: str, prefix: str, template: str | None = TEMPLATE
) -> AsyncIterator[str]:
    """A database of the test's own, cloned from the migrated template (or, with ``template``
    None, with no schema at all), dropped afterwards whatever the test did to it."""
    name = f"{prefix}_{uuid4().hex[:16]}"
    clone = f" TEMPLATE {template}" if template else ""
    await execute_as_admin(server_url, f"CREATE DATABASE {name}{clone}")
    try:
        yield _with_database(server_url, name)
    finally:
        await execute_as_admin(server_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database() -> Iterator[Database]:
    """A cluster of the test's own, migrated (sync: Alembic runs its own event loop), for a
    test that stops and starts PostgreSQL. Never shared: a test that fails mid-restart must
    not leave the next one a cluster that is down or on another port."""
    cluster = throwaway_cluster()
    try:
        url = cluster.start()
        upgrade(url)
        yield Database(cluster, url)
    finally:
        cluster.destroy()


@pytest.fixture
async def database_url(server_url: str, template_url: str) -> AsyncIterator[str]:
    async with scratch_database(server_url, "test") as url:
        yield url


@pytest.fixture
async def other_database_url(server_url: str, template_url: str) -> AsyncIterator[str]:
    """A second migrated database: another genstream, for moving generations between two."""
    async with scratch_database(server_url, "test_other") as url:
        yield url


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    """A database with no schema at all (not even Alembic's table)."""
    async with scratch_database(server_url, "test_empty", template=None) as url:
        yield url


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=20)
    yield pool
    try:
        await asyncio.wait_for(pool.close(), 10)
    except TimeoutError:
        pool.terminate()
        raise


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return Settings(
        DATABASE_URL=None,
        data_dir=tmp_path,
        stream_token_secret="test-secret",
        keepalive_s=15.0,
        offline_delay_s=0.0,
        worker_poll_s=0.5,
        worker_concurrency=4,
    )


def free_socket(port: int = 0) -> socket.socket:
    """A bound socket for a server in the test's loop. TCP_NODELAY here, inherited by every
    connection it accepts: handed a socket, uvicorn on asyncio's loop leaves Nagle on, and
    each keep-alive request then waited 40 ms for a delayed ACK (44 ms -> 1.5 ms a request).
    ``make run`` binds its own address, and is not affected."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    return sock


@dataclass
class RunningApp:
    base_url: str
    app: Litestar

    def client(self, key: str | None = None, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(30.0), **kwargs
        )


@asynccontextmanager
async def serve(app: Litestar, port: int = 0) -> AsyncIterator[RunningApp]:
    """A real uvicorn server on a free port (or ``port``: a restart where clients expect it),
    in this test's event loop."""
    sock = free_socket(port)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_level="warning", timeout_graceful_shutdown=2)
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield RunningApp(f"http://127.0.0.1:{port}", app)
    finally:
        services = getattr(app.state, "services", None)
        if services is not None:
            services.hub.end_streams()
        server.should_exit = True
        await task
        sock.close()


AppFactory = Callable[..., AbstractAsyncContextManager[RunningApp]]


@pytest.fixture
def app_factory(settings: Settings, database_url: str) -> AppFactory:
    """``async with app_factory(worker_concurrency=0) as running: ...`` (``port=`` to serve on
    a given port; everything else overrides a setting)."""

    def factory(port: int = 0, **overrides: Any) -> AbstractAsyncContextManager[RunningApp]:
        return serve(create_app(settings.model_copy(update=overrides), database_url), port)

    return factory


@pytest.fixture
async def running(app_factory: AppFactory) -> AsyncIterator[RunningApp]:
    async with app_factory() as running:
        yield running


KeyFactory = Callable[..., Awaitable[str]]


@pytest.fixture
def make_key(pool: Pool) -> KeyFactory:
    async def factory(owner: str = "alice", *, is_admin: bool = False) -> str:
        return await keys.create_key(pool, owner, is_admin=is_admin)

    return factory


@pytest.fixture
async def api_key(make_key: KeyFactory) -> str:
    return await make_key("alice")


SpawnServe = Callable[..., Awaitable[ServiceProcess]]

SERVE_TOKEN_SECRET = "serve-test-secret"


@pytest.fixture
async def spawn_serve(database_url: str, tmp_path: Any) -> AsyncIterator[SpawnServe]:
    """``await spawn_serve(max_connections="3")``: a ready ``python -m service serve`` on the
    test database, its worker off and its stream tokens signed with SERVE_TOKEN_SECRET
    (keywords are GENSTREAM_* settings); stopped at the end of the test."""
    started: list[ServiceProcess] = []

    async def spawn(**settings: str) -> ServiceProcess:
        name = f"serve-{len(started)}"
        process = spawn_service(
            "serve",
            name,
            tmp_path,
            {
                "DATABASE_URL": database_url,
                "GENSTREAM_STREAM_TOKEN_SECRET": SERVE_TOKEN_SECRET,
                "GENSTREAM_WORKER_CONCURRENCY": "0",
                "GENSTREAM_DATA_DIR": str(tmp_path / name),
                **{f"GENSTREAM_{setting.upper()}": value for setting, value in settings.items()},
            },
        )
        started.append(process)
        await wait_ready(process)
        return process

    yield spawn
    await asyncio.gather(*(terminate(process.proc) for process in started))
