"""deploy/nginx.conf, as shipped, in front of two real ``serve`` processes on one database.

Debian's nginx (``make proxy``) runs the shipped file with two things replaced: the upstream's
servers (the two processes' ports instead of compose's names) and the listen address;
``render`` touches nothing else, so every ``location`` is the shipped one, byte for byte.
Around it, the test's own ``http {}`` adds two directives the locations inherit:
``proxy_ignore_headers X-Accel-Buffering``, so that the config alone must keep streams
flowing (the service's own header would hide a mistake), and a response header naming the
upstream that answered, so that a test knows which process holds a stream.

A ``worker`` process runs the generations (offline provider), as in compose.yaml; the two
``serve`` processes run none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.settings import PROJECT_ROOT
from tests.conftest import SERVE_TOKEN_SECRET, KeyFactory, SpawnServe
from tests.helpers import create_via_api, events_via_api, wait_for_status, wait_until
from tests.processes import STOP_TIMEOUT_S, ServiceProcess, free_port, kill_all, spawn_service

pytestmark = pytest.mark.slow

SHIPPED = PROJECT_ROOT / "deploy" / "nginx.conf"
UPSTREAM_HEADER = "X-Test-Upstream"
TERMINAL_TYPES = frozenset({"generation.succeeded", "generation.failed", "generation.cancelled"})
KEEPALIVE_S = 0.3
RETRY_MS = 100
SERVE_SETTINGS = {"keepalive_s": str(KEEPALIVE_S), "sse_retry_ms": str(RETRY_MS)}
# Generous, so that a loaded machine does not fail it: nginx adds well under a millisecond
# here, and a proxy that holds frames back adds seconds (gzip over a buffered stream: 10 s
# without a byte, tried).
PROXY_DELAY_MAX_S = 0.25


# --- nginx ---------------------------------------------------------------------------------------

_UPSTREAM = re.compile(r"^upstream genstream \{\n(?P<body>.*?)^\}\n", re.MULTILINE | re.DOTALL)
_LISTEN = "    listen 80;\n"


def render(shipped: str, upstreams: Sequence[str], listen: str) -> str:
    """``shipped`` with its upstream's ``server`` lines replaced by ``upstreams`` (and its
    ``resolver`` dropped: these addresses are literal, and Debian's nginx 1.22 predates
    ``resolve``), and ``listen 80`` by ``listen``. Nothing else changes."""
    (block,) = _UPSTREAM.finditer(shipped)
    kept = [
        line
        for line in block["body"].splitlines()
        if not line.lstrip().startswith(("server ", "resolver "))
    ]
    servers = [f"    server {address} max_fails=1 fail_timeout=5s;" for address in upstreams]
    before, after = shipped[: block.start()], shipped[block.end() :]
    assert after.count(_LISTEN) == 1, "the shipped server listens once, on port 80"
    upstream = "upstream genstream {\n" + "\n".join([*kept, *servers]) + "\n}\n"
    return before + upstream + after.replace(_LISTEN, f"    listen {listen};\n")


def nginx_binary() -> str:
    path = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        pytest.fail("the reverse-proxy tests need Debian's nginx: `make proxy` installs it")
    return path


def main_config(workdir: Path, site: Path) -> str:
    """The ``nginx.conf`` around the shipped file, everything in ``workdir``. As root, the
    workers run as root: pytest's temporary folders are 0700, closed to nginx's default
    ``nobody``."""
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp_paths = "".join(
        f"    {kind}_temp_path {workdir / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}daemon off;\nworker_processes 1;\n"
        f"pid {workdir / 'nginx.pid'};\nerror_log {workdir / 'error.log'} info;\n"
        "events {\n    worker_connections 512;\n}\n"
        "http {\n"
        f"{temp_paths}"
        "    default_type application/octet-stream;\n"
        "    proxy_ignore_headers X-Accel-Buffering;\n"
        f"    add_header {UPSTREAM_HEADER} $upstream_addr always;\n"
        f"    include {site};\n"
        "}\n"
    )


@dataclass
class Nginx:
    proc: subprocess.Popen[bytes]
    base_url: str
    workdir: Path

    def log(self) -> str:
        logs = (self.workdir / "error.log", self.workdir / "stdout.log")
        return "\n".join(path.read_text(errors="replace") for path in logs if path.exists())

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(30.0)
        )


@contextlib.asynccontextmanager
async def running_nginx(workdir: Path, upstreams: Sequence[ServiceProcess]) -> AsyncIterator[Nginx]:
    """nginx (not a daemon) with the shipped config in front of ``upstreams``, once /healthz
    answers through it; stopped at the end (SIGTERM, then SIGKILL)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    site = workdir / "genstream.conf"
    addresses = [process.base_url.removeprefix("http://") for process in upstreams]
    site.write_text(render(SHIPPED.read_text(), addresses, f"127.0.0.1:{port}"))
    conf = workdir / "nginx.conf"
    conf.write_text(main_config(workdir, site))
    command = [
        nginx_binary(),
        "-p",
        f"{workdir}/",
        "-c",
        str(conf),
        "-e",
        str(workdir / "error.log"),
    ]
    with open(workdir / "stdout.log", "wb") as out:  # the access log: /dev/stdout
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    nginx = Nginx(proc, f"http://127.0.0.1:{port}", workdir)

    async def answers() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}:\n{nginx.log()}")
        async with nginx.client() as client:
            with contextlib.suppress(httpx.TransportError):
                return (await client.get("/healthz")).status_code == 200
        return False

    try:
        await wait_until(answers, "nginx answering /healthz", 10)
        yield nginx
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, STOP_TIMEOUT_S)


# --- an SSE client ------------------------------------------------------------------------------


@dataclass
class Block:
    """One SSE block (what a blank line ends), and when its end arrived."""

    at: float
    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)
    retry: int | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def seq(self) -> int:
        assert self.id is not None
        return int(self.id)

    def json(self) -> Any:
        return json.loads("\n".join(self.data))


class Blocks:
    """The SSE grammar of the HTML standard, one line at a time (minus the BOM and the id's
    NUL rule, which the service never sends): ``line`` returns a block when a blank line
    ends it."""

    def __init__(self) -> None:
        self._block = Block(0.0)

    def line(self, line: str) -> Block | None:
        block = self._block
        if not line:
            block.at = time.monotonic()
            self._block = Block(0.0)
            return block
        if line.startswith(":"):
            block.comments.append(line[1:].strip())
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            block.id = value
        elif name == "event":
            block.event = value
        elif name == "data":
            block.data.append(value)
        elif name == "retry" and value.isdigit():
            block.retry = int(value)
        return None


async def sse_blocks(response: httpx.Response) -> AsyncIterator[Block]:
    """The response's SSE blocks, each as soon as its blank line arrives."""
    blocks = Blocks()
    async for line in response.aiter_lines():
        if (block := blocks.line(line)) is not None:
            yield block


def parse_blocks(text: str) -> list[Block]:
    blocks = Blocks()
    return [block for line in text.splitlines() if (block := blocks.line(line)) is not None]


@dataclass
class Connection:
    """One response of a follow: the upstreams nginx tried for it (the last one answered:
    ``$upstream_addr``), and the events it sent."""

    status: int
    tried: str
    events: list[Block] = field(default_factory=list)
    broken: str = ""  # the transport error that ended it, if one did

    @property
    def upstream(self) -> str:
        return self.tried.rpartition(", ")[2]


@dataclass
class Follow:
    connections: list[Connection] = field(default_factory=list)

    @property
    def events(self) -> list[Block]:
        return [event for connection in self.connections for event in connection.events]

    @property
    def seqs(self) -> list[int]:
        return [event.seq for event in self.events]

    @property
    def upstream(self) -> str | None:
        """Who answered the latest connection (None before any answer)."""
        return self.connections[-1].upstream if self.connections else None


async def follow_resuming(
    client: httpx.AsyncClient,
    path: str,
    follow: Follow,
    *,
    attempts: int = 10,
    last_id: str | None = None,
) -> Follow:
    """Read ``path`` as EventSource does: when a connection breaks or closes, wait the
    server's ``retry`` and reconnect with ``Last-Event-ID``, until the terminal event or a
    204. Each response goes into ``follow`` as it arrives; ``last_id`` starts after it."""
    retry_s = 0.0
    for attempt in range(attempts):
        headers = {"Last-Event-ID": last_id} if last_id is not None else {}
        try:
            async with client.stream("GET", path, headers=headers) as response:
                connection = Connection(
                    response.status_code, response.headers.get(UPSTREAM_HEADER, "")
                )
                follow.connections.append(connection)
                if response.status_code == 204:
                    return follow
                if response.status_code == 200:
                    async for block in sse_blocks(response):
                        if block.retry is not None:
                            retry_s = block.retry / 1000
                        if block.id is None:
                            continue
                        last_id = block.id
                        connection.events.append(block)
                        if block.event in TERMINAL_TYPES:
                            return follow
        except httpx.TransportError as exc:
            if len(follow.connections) == attempt:  # it broke before any answer
                follow.connections.append(Connection(0, ""))
            follow.connections[-1].broken = repr(exc)
        # The server's reconnection delay, which EventSource waits too: a rule, not a guess.
        await asyncio.sleep(retry_s)
    raise AssertionError(f"no terminal event in {attempts} connections: {follow}")


async def follow_direct(client: httpx.AsyncClient, path: str, follow: Follow) -> Follow:
    """One connection straight to a ``serve``, read to its terminal event."""
    async with client.stream("GET", path) as response:
        assert response.status_code == 200
        connection = Connection(response.status_code, "direct")
        follow.connections.append(connection)
        async for block in sse_blocks(response):
            if block.id is not None:
                connection.events.append(block)
                if block.event in TERMINAL_TYPES:
                    break
    return follow


# --- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    serves: list[ServiceProcess]
    nginx: Nginx
    key: str
    start_worker: Callable[[], Awaitable[ServiceProcess]]

    def serve_at(self, upstream: str) -> ServiceProcess:
        (process,) = (s for s in self.serves if s.base_url == f"http://{upstream}")
        return process

    def upstreams(self, *, but: ServiceProcess | None = None) -> set[str]:
        return {s.base_url.removeprefix("http://") for s in self.serves if s is not but}


@pytest.fixture
async def stack(
    spawn_serve: SpawnServe, make_key: KeyFactory, database_url: str, tmp_path: Path
) -> AsyncIterator[Stack]:
    """Two ``serve`` processes (no worker in them, one token secret) behind nginx;
    ``start_worker()`` starts a ``worker`` process (offline provider) when a test wants its
    generations to run."""
    serves = [await spawn_serve(**SERVE_SETTINGS), await spawn_serve(**SERVE_SETTINGS)]
    workers: list[ServiceProcess] = []

    async def start_worker() -> ServiceProcess:
        name = f"worker-{len(workers)}"
        settings = {
            "DATABASE_URL": database_url,
            "GENSTREAM_STREAM_TOKEN_SECRET": SERVE_TOKEN_SECRET,
            "GENSTREAM_DATA_DIR": str(tmp_path / name),
            "GENSTREAM_WORKER_CONCURRENCY": "2",
            "GENSTREAM_WORKER_POLL_S": "0.5",
            "GENSTREAM_OFFLINE_DELAY_S": "0.01",
        }
        workers.append(spawn_service("worker", name, tmp_path, settings))
        return workers[-1]

    try:
        async with running_nginx(tmp_path / "nginx", serves) as nginx:
            yield Stack(serves, nginx, await make_key("alice"), start_worker)
    finally:
        kill_all(workers)


def stream_path(generation_id: str) -> str:
    return f"/api/generations/{generation_id}/stream"


# --- the tests ----------------------------------------------------------------------------------


async def test_live_events_cross_nginx_within_milliseconds_of_a_direct_stream(
    stack: Stack,
) -> None:
    """The same live events on a proxied stream and on a direct one to the same process,
    opened side by side before the run starts."""
    async with stack.nginx.client(stack.key) as proxied_client:
        generation_id = (await create_via_api(proxied_client))["id"]
        path = stream_path(generation_id)
        proxied, direct = Follow(), Follow()
        proxied_task = asyncio.create_task(
            follow_resuming(proxied_client, path, proxied, attempts=1)
        )
        holder = await wait_until(lambda: proxied.upstream, "the proxied stream's upstream")
        # Straight to the process that holds the proxied stream: the difference between the
        # two is nginx's, not a second process's.
        async with stack.serve_at(holder).client(stack.key) as direct_client:
            direct_task = asyncio.create_task(follow_direct(direct_client, path, direct))
            try:
                await wait_until(
                    lambda: proxied.seqs[:1] == direct.seqs[:1] == [1], "seq 1 on both streams"
                )
                await stack.start_worker()  # everything after seq 1 is appended live
                await asyncio.wait_for(asyncio.gather(proxied_task, direct_task), 60)
            finally:
                proxied_task.cancel()
                direct_task.cancel()
        stored = await events_via_api(proxied_client, generation_id)

    assert proxied.seqs == direct.seqs == [event["seq"] for event in stored]
    assert [event.json() for event in proxied.events] == stored
    assert len(stored) > 10, "too short a run to measure"
    live = list(zip(proxied.events[1:], direct.events[1:], strict=True))
    delays = [p.at - d.at for p, d in live]
    print(
        f"\nproxied - direct over {len(delays)} live events: median "
        f"{statistics.median(delays) * 1000:.2f} ms, max {max(delays) * 1000:.2f} ms"
    )
    late = [(p.seq, round(p.at - d.at, 3)) for p, d in live if p.at - d.at > PROXY_DELAY_MAX_S]
    assert not late, f"events held back by the proxy (seq, seconds late): {late}"


async def test_last_event_id_resumes_through_nginx_on_either_process(stack: Stack) -> None:
    await stack.start_worker()
    async with stack.nginx.client(stack.key) as client:
        created = await create_via_api(client)
        generation_id = created["id"]
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]
        path = stream_path(generation_id)
        whole = await follow_resuming(client, path, Follow(), attempts=1)
        resumed = await follow_resuming(client, path, Follow(), attempts=1, last_id="5")
        ended = await follow_resuming(client, path, Follow(), attempts=1, last_id=str(last_seq))
        stored = await events_via_api(client, generation_id)
    # The stream token one process issued opens the stream on the other (one shared secret):
    # least_conn takes idle upstreams in turn, so a few requests reach both.
    answered: dict[str, list[int]] = {}
    async with httpx.AsyncClient(base_url=stack.nginx.base_url) as anonymous:
        for _ in range(10):
            response = await anonymous.get(
                path,
                params={"token": created["stream_token"]},
                headers={"Last-Event-ID": str(last_seq - 2)},
            )
            assert response.status_code == 200, response.text
            blocks = parse_blocks(response.text)
            answered[response.headers[UPSTREAM_HEADER]] = [b.seq for b in blocks if b.id]
            if len(answered) == len(stack.serves):
                break

    assert whole.seqs == list(range(1, last_seq + 1))
    assert [event.json() for event in whole.events] == stored
    assert resumed.seqs == list(range(6, last_seq + 1))
    assert [connection.status for connection in ended.connections] == [204]
    assert set(answered) == stack.upstreams()
    assert all(seqs == [last_seq - 1, last_seq] for seqs in answered.values())


async def test_retry_hint_and_keepalives_pass_through_and_only_json_is_compressed(
    stack: Stack,
) -> None:
    """No worker runs: the generation stays queued, and its stream idles on keepalives."""
    gzip = {"Accept-Encoding": "gzip"}
    async with stack.nginx.client(stack.key) as client:
        generation_id = (await create_via_api(client))["id"]
        blocks: list[Block] = []
        async with (
            asyncio.timeout(20),
            client.stream("GET", stream_path(generation_id), headers=gzip) as response,
        ):
            async for block in sse_blocks(response):
                blocks.append(block)
                if len(blocks) == 6:
                    break
        schema = await client.get("/schema/openapi.json", headers=gzip)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["Cache-Control"] == "no-cache"
    assert "Content-Encoding" not in response.headers, "a stream must never be compressed"
    assert schema.headers.get("Content-Encoding") == "gzip", "JSON is compressed (gzip is on)"
    retry, queued, *keepalives = blocks
    assert retry.retry == RETRY_MS, "`retry:` comes first"
    assert retry.id is None
    assert (queued.seq, queued.event) == (1, "generation.queued")
    assert all(block.comments == ["keepalive"] for block in keepalives)
    assert all(block.id is None for block in keepalives)
    gaps = [later.at - earlier.at for earlier, later in zip(blocks[1:], keepalives, strict=False)]
    assert max(gaps) < KEEPALIVE_S + PROXY_DELAY_MAX_S, f"keepalives held back: {gaps}"


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
async def test_a_stopped_process_s_client_resumes_on_the_other_with_exactly_the_rest(
    stack: Stack, stop: signal.Signals
) -> None:
    """SIGKILL: the connection breaks. SIGTERM: ``serve`` ends its streams and exits (a
    deploy's drain). Either way the client resumes through nginx with Last-Event-ID, on the
    process still running, while the run goes on in the worker."""
    await stack.start_worker()
    async with stack.nginx.client(stack.key) as client:
        generation_id = (await create_via_api(client))["id"]
        follow = Follow()
        reader = asyncio.create_task(follow_resuming(client, stream_path(generation_id), follow))
        try:
            await wait_until(lambda: len(follow.seqs) >= 8, "8 events on the first connection")
            holder = stack.serve_at(follow.connections[0].upstream)
            holder.proc.send_signal(stop)
            state = (await client.get(f"/api/generations/{generation_id}")).json()
            await asyncio.wait_for(reader, 60)
        finally:
            reader.cancel()
        stored = await events_via_api(client, generation_id)

    assert state["status"] == "running", "the run must go on while the client is away"
    first, *others = follow.connections
    assert first.events[-1].event not in TERMINAL_TYPES
    if stop == signal.SIGKILL:
        assert first.broken, "the connection ends with its process"
    else:
        assert not first.broken, "a drained stream ends cleanly"
    assert others[-1].upstream in stack.upstreams(but=holder)
    assert follow.seqs == [event["seq"] for event in stored], "lost, repeated or reordered"
    assert [event.json() for event in follow.events] == stored
    assert stored[-1]["type"] == "generation.succeeded"
    print(
        f"\n{stop.name} {holder.name} after seq {first.events[-1].seq}: "
        f"{len(follow.events) - len(first.events)} events left, over "
        f"{[(c.status, c.tried, len(c.events)) for c in others]}"
    )
