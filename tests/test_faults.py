"""Real processes, real faults: workers SIGKILLed at random points, a worker paused past its
lease, a server SIGTERMed mid-run. Whatever happens to the processes, every generation's log
stays exact (seq 1..N, one terminal event and it is last, each phase completed once together
with its files) and a stream following it, reconnecting with Last-Event-ID, sees every stored
event exactly once.

Every process here is a real ``python -m service worker|serve`` on the test's database. The
SIGKILL scenario is written once (``sigkill_scenario``) and also run, longer, by
``scripts/soak.py``; that is why it raises plain errors instead of calling pytest.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from httpx_sse import aconnect_sse

from service.events import TERMINAL_STATUSES
from service.generation import runs
from service.generation.phases import PHASES
from service.settings import PROJECT_ROOT
from service.spec import Spec
from service.store import event_log, generations
from service.store.db import Pool
from tests.conftest import KeyFactory
from tests.helpers import SPEC
from tests.processes import STOP_TIMEOUT_S, free_port, wait_exit

pytestmark = pytest.mark.slow

READY_TIMEOUT_S = 30.0
TERMINAL = frozenset({"generation.succeeded", "generation.failed", "generation.cancelled"})
STAGES = tuple(phase.stage for phase in PHASES)
WORKER_RUNNING = re.compile(r"worker \S+ running")
LOST_LEASE = ("lost its lease", "lost the lease")
RUN_MARKS = ("phase.started", "generation.resumed")

Event = dict[str, Any]


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Child:
    """One ``python -m service`` process; its stdout and stderr go to ``log_path``."""

    name: str
    command: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    base_url: str = ""
    killed_by_us: bool = False
    _ready: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        """A worker that has logged ``worker <id> running`` (claims from then on)."""
        if not self._ready:
            self._ready = bool(WORKER_RUNNING.search(self.log()))
        return self._ready

    def client(self, key: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(30.0)
        )


class Children:
    """Every process a test starts. ``close`` kills whatever is left, stopped ones included
    (SIGCONT first), and reaps them all; call it in a ``finally``."""

    def __init__(
        self, database_url: str, workdir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.all: list[Child] = []
        self._env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "HOST": "127.0.0.1",
            "GENSTREAM_STREAM_TOKEN_SECRET": "faults-test-secret",
            "GENSTREAM_DATA_DIR": str(workdir / "data"),
            **(env or {}),
        }

    def spawn(self, command: str, name: str, env: Mapping[str, str]) -> Child:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port = free_port() if command == "serve" else 0
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service", command],
                cwd=PROJECT_ROOT,
                env={**self._env, **env, "PORT": str(port)},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        child = Child(name, command, proc, log_path, f"http://127.0.0.1:{port}" if port else "")
        self.all.append(child)
        return child

    def worker(self, name: str, env: Mapping[str, str]) -> Child:
        return self.spawn("worker", name, env)

    async def serve(self, name: str, env: Mapping[str, str]) -> Child:
        child = self.spawn("serve", name, env)
        await wait_ready(child)
        return child

    def kill(self, child: Child) -> None:
        """SIGKILL, and reap it at once (a SIGKILLed process exits within milliseconds)."""
        child.killed_by_us = True
        if child.alive():
            child.proc.kill()
        child.proc.wait(STOP_TIMEOUT_S)

    def close(self) -> None:
        for child in self.all:
            if child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGCONT)
                    child.proc.kill()
        for child in self.all:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.proc.wait(STOP_TIMEOUT_S)


async def wait_ready(child: Child) -> None:
    """Until /readyz is 200 with the LISTEN connection up (bounded)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with child.client() as client:
        while True:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited early:\n{child.log()}")
            with contextlib.suppress(httpx.TransportError):
                response = await client.get("/readyz", timeout=2.0)
                if response.status_code == 200 and response.json().get("listener") is True:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} not ready in {READY_TIMEOUT_S}s:\n{child.log()}")
            await asyncio.sleep(0.05)


async def eventually(what: str, check: Callable[[], Awaitable[bool]], seconds: float) -> None:
    """Poll ``check`` every 50 ms until true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {seconds}s: {what}")
        await asyncio.sleep(0.05)


# -- streams and stored state ------------------------------------------------------------------


@dataclass
class StreamRecord:
    """What one client saw: the events in arrival order, and each connection it opened
    (the server's name, and the Last-Event-ID it sent)."""

    events: list[Event] = field(default_factory=list)
    connections: list[tuple[str, str | None]] = field(default_factory=list)


async def follow_stream(
    pick: Callable[[], tuple[str, httpx.AsyncClient]],
    generation_id: UUID,
    record: StreamRecord,
    *,
    connections_max: int = 20,
) -> None:
    """Follow one stream to its terminal event like EventSource does: when the connection
    ends early, reconnect (to whichever server ``pick`` names now) with Last-Event-ID."""
    while True:
        name, client = pick()
        last = str(record.events[-1]["seq"]) if record.events else None
        record.connections.append((name, last))
        headers = {"Last-Event-ID": last} if last is not None else {}
        with contextlib.suppress(httpx.TransportError):
            async with aconnect_sse(
                client, "GET", f"/api/generations/{generation_id}/stream", headers=headers
            ) as source:
                if source.response.status_code == 204:
                    return
                if source.response.status_code != 200:
                    await source.response.aread()
                    raise AssertionError(
                        f"stream {generation_id} on {name}: {source.response.status_code} "
                        f"{source.response.text}"
                    )
                async for sse in source.aiter_sse():
                    if not sse.data:
                        continue  # the `retry:` frame
                    event: Event = json.loads(sse.data)
                    if sse.id != str(event["seq"]) or sse.event != event["type"]:
                        raise AssertionError(f"frame fields disagree with its data: {sse}")
                    record.events.append(event)
                    if event["type"] in TERMINAL:
                        return
        if len(record.connections) >= connections_max:
            raise RuntimeError(f"stream {generation_id}: {connections_max} connections, no end")
        await asyncio.sleep(0.1)


@dataclass
class Stored:
    events: list[Event]
    files: list[dict[str, Any]]


async def stored_via_api(client: httpx.AsyncClient, generation_id: UUID) -> Stored:
    events: list[Event] = []
    after = 0
    while True:
        response = await client.get(
            f"/api/generations/{generation_id}/events", params={"after": after, "limit": 1000}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        events.extend(page["events"])
        after = page["next_after"]
        if not page["has_more"]:
            break
    response = await client.get(f"/api/generations/{generation_id}/files")
    assert response.status_code == 200, response.text
    return Stored(events, response.json()["files"])


async def stored_via_pool(pool: Pool, owner: str, generation_id: UUID) -> Stored:
    async with pool.acquire() as conn:
        events = await event_log.select_events_after(conn, generation_id, 0, 1_000_000)
        files = await generations.select_files(conn, owner, generation_id)
    return Stored([json.loads(e.json) for e in events], [asdict(f) for f in files])


async def unfinished(pool: Pool, ids: Sequence[UUID]) -> int:
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM generations WHERE id = ANY($1::uuid[]) "
            "AND status <> ALL($2::text[])",
            list(ids),
            [status.value for status in TERMINAL_STATUSES],
        )
    return count


async def runs_held(pool: Pool, pid: int) -> int:
    """Unfinished runs whose lease names the worker process ``pid`` (dead or alive)."""
    async with pool.acquire() as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM generations WHERE claimed_by LIKE $1 "
            "AND status <> ALL($2::text[])",
            f"%:{pid}:%",
            [status.value for status in TERMINAL_STATUSES],
        )
    return count


async def first_event(pool: Pool, generation_id: UUID, kind: str) -> Event | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {event_log.EVENT_JSON} AS json FROM generation_events "
            "WHERE generation_id = $1 AND type = $2 ORDER BY seq LIMIT 1",
            generation_id,
            kind,
        )
    return None if row is None else dict(json.loads(row["json"]))


# -- what a correct log looks like -------------------------------------------------------------


def log_violations(
    generation_id: UUID, stored: Stored, streamed: StreamRecord | None = None
) -> list[str]:
    """Everything wrong with one finished generation's log, files and stream ([] when clean)."""
    events, bad = stored.events, []
    where = f"generation {generation_id}"
    seqs = [e["seq"] for e in events]
    if seqs != list(range(1, len(events) + 1)):
        bad.append(f"{where}: seqs are not 1..{len(events)}: {seqs}")
    types = [e["type"] for e in events]
    if types[:1] != ["generation.queued"] or types.count("generation.started") != 1:
        bad.append(f"{where}: expected one queued then one started: {types[:3]}...")
    terminals = [t for t in types if t in TERMINAL]
    if terminals != ["generation.succeeded"] or types[-1] != "generation.succeeded":
        last = events[-1] if events else None
        bad.append(f"{where}: terminal events {terminals}, last {last}")
    completed = [e["stage"] for e in events if e["type"] == "phase.completed"]
    if completed != list(STAGES):
        bad.append(f"{where}: phase.completed stages {completed}, expected {list(STAGES)}")

    done: list[str] = []
    for i, event in enumerate(events):
        kind, stage, seq = event["type"], event["stage"], event["seq"]
        if kind in ("phase.started", "llm.delta", "file.saved") and stage in done:
            bad.append(f"{where}: seq {seq} is a {kind} of {stage}, completed before")
        if kind == "phase.completed":
            # The phase's files are stored in its batch: right before it, one event per file.
            count = event["data"]["files"]
            batch = [(e["type"], e["stage"]) for e in events[max(0, i - count) : i]]
            if count < 1 or batch != [("file.saved", stage)] * count:
                bad.append(f"{where}: phase.completed at seq {seq} lacks its {count} files")
            done.append(stage)
        if kind == "generation.resumed":
            if event["data"].get("completed_phases") != done:
                bad.append(f"{where}: resumed at seq {seq} with {event['data']}; done: {done}")
            pending = [s for s in STAGES if s not in done]
            after = [e for e in events[i + 1 :] if e["type"] in RUN_MARKS]
            if after and after[0]["type"] == "phase.started" and [after[0]["stage"]] != pending[:1]:
                bad.append(f"{where}: resumed at seq {seq} ({pending} left) went on at {after[0]}")

    saved = [e for e in events if e["type"] == "file.saved"]
    for stage in STAGES:
        paths = Counter(e["data"]["path"] for e in saved if e["stage"] == stage)
        if dupes := sorted(path for path, n in paths.items() if n > 1):
            bad.append(f"{where}: stage {stage} saved {dupes} more than once")
    announced = {e["data"]["path"]: e for e in saved}
    files = {f["path"]: f for f in stored.files}
    if set(announced) != set(files) or len(saved) != len(files):
        bad.append(f"{where}: saved paths {sorted(announced)} are not the stored {sorted(files)}")
    for path, file in files.items():
        announcement = announced.get(path)
        if announcement is not None and (file["seq"], file["sha256"]) != (
            announcement["seq"],
            announcement["data"]["sha256"],
        ):
            bad.append(f"{where}: stored {path} (seq {file['seq']}) is not the one saved")

    if streamed is not None:
        got = [e["seq"] for e in streamed.events]
        if streamed.events != events:
            bad.append(f"{where}: the stream saw seqs {got}, stored are 1..{len(events)}")
    return bad


# -- the SIGKILL scenario (also scripts/soak.py) -----------------------------------------------


@dataclass(frozen=True)
class SoakParams:
    generations: int = 8
    workers: int = 3
    min_kills: int = 20
    seed: int = 20_240_611
    lease_s: float = 1.0
    poll_s: float = 0.2
    offline_delay_s: float = 0.002
    concurrency: int = 2
    kill_every_s: tuple[float, float] = (0.3, 0.8)
    create_every_s: float = 1.0
    deadline_s: float = 90.0


@dataclass
class SoakReport:
    kills: list[str] = field(default_factory=list)
    stored: dict[UUID, Stored] = field(default_factory=dict)
    streamed: dict[UUID, StreamRecord] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    kills_mid_run: int = 0
    workers_started: int = 0
    elapsed_s: float = 0.0

    def count(self, kind: str) -> int:
        return sum(1 for s in self.stored.values() for e in s.events if e["type"] == kind)

    @property
    def resumes(self) -> int:
        return self.count("generation.resumed")

    @property
    def events(self) -> int:
        return sum(len(s.events) for s in self.stored.values())


async def sigkill_scenario(
    children: Children,
    pool: Pool,
    key: str,
    params: SoakParams = SoakParams(),
    say: Callable[[str], None] = print,
) -> SoakReport:
    """``params.workers`` worker processes run generations while a killer SIGKILLs a random
    running one every 0.3-0.8 s and starts a replacement at once, until at least
    ``min_kills`` kills AND every generation finished (or ``deadline_s``). Streams follow every
    generation through a `serve` process that runs nothing itself."""
    rng = random.Random(params.seed)
    say(f"seed {params.seed}: {params}")
    report = SoakReport()
    loop = asyncio.get_running_loop()
    began = loop.time()
    deadline = began + params.deadline_s
    worker_env = {
        "GENSTREAM_LEASE_S": str(params.lease_s),
        "GENSTREAM_WORKER_POLL_S": str(params.poll_s),
        "GENSTREAM_WORKER_CONCURRENCY": str(params.concurrency),
        "GENSTREAM_OFFLINE_DELAY_S": str(params.offline_delay_s),
        "GENSTREAM_RUN_ATTEMPTS_MAX": "100",
    }
    serial = itertools.count(1)

    def new_worker() -> Child:
        report.workers_started += 1
        return children.worker(f"worker-{next(serial)}", worker_env)

    serve = await children.serve("serve", {"GENSTREAM_WORKER_CONCURRENCY": "0"})
    workers = [new_worker() for _ in range(params.workers)]
    readers: list[asyncio.Task[None]] = []
    async with serve.client(key) as client:
        try:
            ids: list[UUID] = []

            async def create() -> None:
                """One generation every ``create_every_s``: work keeps arriving under fire."""
                for _ in range(params.generations):
                    created = await client.post("/api/generations", json={"spec": SPEC})
                    if created.status_code != 201:
                        raise RuntimeError(f"create: {created.status_code} {created.text}")
                    ids.append(generation_id := UUID(created.json()["id"]))
                    report.streamed[generation_id] = record = StreamRecord()
                    readers.append(
                        asyncio.create_task(
                            follow_stream(lambda: ("serve", client), generation_id, record)
                        )
                    )
                    await asyncio.sleep(params.create_every_s)

            creator = asyncio.create_task(create())
            readers.append(creator)

            while loop.time() < deadline:
                if creator.done():
                    creator.result()  # raises if creating failed
                    if len(report.kills) >= params.min_kills and not await unfinished(pool, ids):
                        break
                await asyncio.sleep(rng.uniform(*params.kill_every_s))
                for i, worker in enumerate(workers):
                    if not worker.alive():  # died by itself: a bug, reported below
                        workers[i] = new_worker()
                running = [w for w in workers if w.alive() and w.ready()]
                if not running:
                    continue
                victim = rng.choice(running)
                children.kill(victim)
                workers[workers.index(victim)] = new_worker()
                held = await runs_held(pool, victim.pid)
                report.kills_mid_run += bool(held)
                report.kills.append(
                    f"{loop.time() - began:6.2f}s SIGKILL {victim.name} (pid {victim.pid}) "
                    f"holding {held} run(s)"
                )
            else:
                report.violations.append(
                    f"not done within {params.deadline_s}s: {len(report.kills)} kills, "
                    f"{await unfinished(pool, ids)} generation(s) unfinished"
                )
            say(f"{len(report.kills)} kills in {loop.time() - began:.1f}s")
            try:
                async with asyncio.timeout(max(5.0, deadline - loop.time())):
                    await asyncio.gather(*readers)
            except TimeoutError:
                report.violations.append("streams still open after every generation finished")
            for generation_id in ids:
                report.stored[generation_id] = stored = await stored_via_api(client, generation_id)
                report.violations += log_violations(
                    generation_id, stored, report.streamed[generation_id]
                )
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
    report.elapsed_s = loop.time() - began
    say(
        f"{len(report.kills)} kills ({report.kills_mid_run} mid-run), {report.resumes} resumes, "
        f"{report.events} events in {len(report.stored)} generations, {report.elapsed_s:.1f}s"
    )
    for child in children.all:
        if child.command == "worker" and not child.killed_by_us and not child.alive():
            report.violations.append(
                f"{child.name} exited by itself ({child.proc.returncode}):\n{child.log()[-3000:]}"
            )
        if "Traceback" in child.log():
            report.violations.append(f"{child.name} logged a traceback:\n{child.log()[-3000:]}")
    return report


# -- tests -------------------------------------------------------------------------------------


@pytest.fixture
def children(database_url: str, tmp_path: Path) -> Iterator[Children]:
    kids = Children(database_url, tmp_path / "processes")
    try:
        yield kids
    finally:
        kids.close()


@pytest.mark.timeout(180)
async def test_sigkill_workers_at_random_points_loses_nothing(
    children: Children, pool: Pool, make_key: KeyFactory
) -> None:
    key = await make_key("alice")
    params = SoakParams()
    report = await sigkill_scenario(children, pool, key, params)
    print("\n".join(report.kills))

    kills = len(report.kills)
    assert report.violations == []
    assert kills >= params.min_kills
    assert kills >= 20
    assert len(report.stored) == params.generations
    assert report.resumes > 0, "no run was ever resumed: the kills hit nothing"


async def test_a_paused_worker_that_lost_its_lease_cannot_write(
    children: Children, pool: Pool
) -> None:
    env = {
        "GENSTREAM_LEASE_S": "1.0",
        "GENSTREAM_WORKER_POLL_S": "0.2",
        "GENSTREAM_WORKER_CONCURRENCY": "1",
        "GENSTREAM_OFFLINE_DELAY_S": "0.006",
        "GENSTREAM_RUN_ATTEMPTS_MAX": "100",
    }
    generation_id = await runs.create_generation(
        pool,
        "alice",
        Spec.model_validate(SPEC),
        provider=None,
        model=None,
        available_providers=frozenset({"offline"}),
    )
    first = children.worker("first", env)

    async def streaming() -> bool:
        return await first_event(pool, generation_id, "llm.delta") is not None

    await eventually("the first worker streams text", streaming, READY_TIMEOUT_S)
    first.proc.send_signal(signal.SIGSTOP)
    second = children.worker("second", env)
    resumed: Event | None = None

    async def taken_over() -> bool:
        nonlocal resumed
        resumed = await first_event(pool, generation_id, "generation.resumed")
        return resumed is not None

    try:
        await eventually("the second worker resumes the run", taken_over, READY_TIMEOUT_S)
    finally:
        first.proc.send_signal(signal.SIGCONT)
    assert resumed is not None

    async def finished() -> bool:
        return await unfinished(pool, [generation_id]) == 0

    async def gave_up() -> bool:
        return any(line in first.log() for line in LOST_LEASE)

    await eventually("the generation finishes", finished, 30)
    await eventually("the paused worker notices it lost the lease", gave_up, 10)

    stored = await stored_via_pool(pool, "alice", generation_id)
    assert log_violations(generation_id, stored) == []
    started = next(e for e in stored.events if e["type"] == "generation.started")
    assert f":{first.pid}:" in started["data"]["worker"]
    assert f":{second.pid}:" in resumed["data"]["worker"]
    old, new = started["data"]["attempt"], resumed["data"]["attempt"]
    assert new > old
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT seq, type, idempotency_key FROM generation_events "
            "WHERE generation_id = $1 AND seq >= $2 ORDER BY seq",
            generation_id,
            resumed["seq"],
        )
    keys = [row["idempotency_key"] for row in rows]
    assert rows[-1]["type"] == "generation.succeeded"
    assert all(key is not None and key.startswith(f"{new}.") for key in keys), keys
    assert first.alive(), f"the paused worker died instead of standing down:\n{first.log()}"
    assert "Traceback" not in first.log() + second.log()


async def test_sigterm_during_a_run_hands_it_over_at_once_and_the_stream_misses_nothing(
    children: Children, pool: Pool, make_key: KeyFactory
) -> None:
    env = {
        "GENSTREAM_LEASE_S": "30",
        "GENSTREAM_WORKER_POLL_S": "0.2",
        "GENSTREAM_OFFLINE_DELAY_S": "0.012",
        "GENSTREAM_RUN_ATTEMPTS_MAX": "100",
    }
    key = await make_key("alice")
    a = await children.serve("a", {**env, "GENSTREAM_WORKER_CONCURRENCY": "1"})
    record = StreamRecord()
    target: list[tuple[str, httpx.AsyncClient]] = []
    async with a.client(key) as on_a, contextlib.AsyncExitStack() as stack:
        created = await on_a.post("/api/generations", json={"spec": SPEC})
        assert created.status_code == 201, created.text
        generation_id = UUID(created.json()["id"])
        target.append(("a", on_a))
        reader = asyncio.create_task(follow_stream(lambda: target[-1], generation_id, record))
        try:
            async with asyncio.timeout(60):

                async def a_runs_it() -> bool:
                    return any(e["type"] == "generation.started" for e in record.events)

                await eventually("A starts the run", a_runs_it, READY_TIMEOUT_S)
                b = await children.serve("b", {**env, "GENSTREAM_WORKER_CONCURRENCY": "1"})
                on_b = await stack.enter_async_context(b.client(key))
                if await unfinished(pool, [generation_id]) == 0:
                    pytest.fail("the run finished before A was stopped: make it slower")
                target.append(("b", on_b))  # where the reader reconnects from now on
                a.proc.send_signal(signal.SIGTERM)
                signalled_at = datetime.now(UTC)
                await reader
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        stored = await stored_via_api(on_b, generation_id)

    assert log_violations(generation_id, stored, record) == []
    # A's stream ended at the SIGTERM; the client went on from B where it stopped.
    assert len(record.connections) == 2, record.connections
    (first, _), (second, last_event_id) = record.connections
    assert (first, second) == ("a", "b")
    assert last_event_id is not None
    assert int(last_event_id) < stored.events[-1]["seq"]
    resumed = [e for e in stored.events if e["type"] == "generation.resumed"]
    assert len(resumed) == 1, resumed
    started = next(e for e in stored.events if e["type"] == "generation.started")
    assert f":{a.pid}:" in started["data"]["worker"]
    assert f":{b.pid}:" in resumed[0]["data"]["worker"]
    handover_s = (datetime.fromisoformat(resumed[0]["timestamp"]) - signalled_at).total_seconds()
    print(f"B resumed the run {handover_s:.2f}s after A's SIGTERM")
    assert handover_s < 5, f"B resumed {handover_s:.1f}s after the SIGTERM: not a release"
    code = await wait_exit(a.proc, STOP_TIMEOUT_S)
    assert code in (0, -signal.SIGTERM), a.log()
