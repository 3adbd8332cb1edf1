"""The machinery of the fault tests (``tests/test_faults.py``) and of ``scripts/soak.py``:
processes started and killed, streams followed through it all, and what a correct log looks
like. It raises plain errors instead of calling pytest, so that the soak runs it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from httpx_sse import aconnect_sse

from service.events import TERMINAL_STATUSES
from service.generation.phases import PHASES
from service.store import event_log, generations
from service.store.db import Pool
from tests.helpers import SPEC
from tests.processes import (
    STOP_TIMEOUT_S,
    ServiceProcess,
    kill_all,
    spawn_service,
    wait_ready,
)

TERMINAL = frozenset({"generation.succeeded", "generation.failed", "generation.cancelled"})
STAGES = tuple(phase.stage for phase in PHASES)
WORKER_RUNNING = re.compile(r"\bworker\.running\b")  # the line ``worker`` logs once it claims
LOST_LEASE = ("lost its lease", "lease.lost")
RUN_MARKS = ("phase.started", "generation.resumed")

Event = dict[str, Any]


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Child(ServiceProcess):
    """A process of a fault test, and whether the test killed it on purpose."""

    killed_by_us: bool = False
    _ready: bool = False

    def ready(self) -> bool:
        """A worker that has logged ``worker.running`` (claims from then on)."""
        if not self._ready:
            self._ready = bool(WORKER_RUNNING.search(self.log()))
        return self._ready


class Children:
    """Every process a test starts. ``close`` kills whatever is left, stopped ones included
    (SIGCONT first), and reaps them all; call it in a ``finally``."""

    def __init__(
        self, database_url: str, workdir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.workdir = workdir
        self.all: list[Child] = []
        self._env = {
            "DATABASE_URL": database_url,
            "GENSTREAM_STREAM_TOKEN_SECRET": "faults-test-secret",
            "GENSTREAM_DATA_DIR": str(workdir / "data"),
            # The soak creates more runs than a small team's quotas allow: faults, not quotas.
            "GENSTREAM_OWNER_MAX_ACTIVE_RUNS": "0",
            "GENSTREAM_OWNER_RUNS_PER_MINUTE": "0",
            **(env or {}),
        }

    def spawn(self, command: str, name: str, env: Mapping[str, str]) -> Child:
        started = spawn_service(command, name, self.workdir, {**self._env, **env})
        child = Child(**vars(started))
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
        kill_all(list(self.all))


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
    if completed[: len(STAGES)] != list(STAGES) or not verify_rounds(completed[len(STAGES) :]):
        bad.append(f"{where}: phase.completed stages {completed}, expected {list(STAGES)} then "
                   "verify rounds (verify, then repair and verify again)")  # fmt: skip

    done: list[str] = []
    for i, event in enumerate(events):
        kind, stage, seq = event["type"], event["stage"], event["seq"]
        if kind in ("phase.started", "llm.delta", "file.saved") and stage in done[: len(STAGES)]:
            bad.append(f"{where}: seq {seq} is a {kind} of {stage}, completed before")
        if kind == "phase.completed":
            # The phase's files are stored in its batch: right before it, one event per file
            # (verify writes none).
            count = event["data"]["files"]
            batch = [(e["type"], e["stage"]) for e in events[max(0, i - count) : i]]
            if (count < 1) != (stage == "verify") or batch != [("file.saved", stage)] * count:
                bad.append(f"{where}: phase.completed at seq {seq} lacks its {count} files")
            done.append(stage)
        if kind == "generation.resumed":
            if event["data"].get("completed_phases") != done:
                bad.append(f"{where}: resumed at seq {seq} with {event['data']}; done: {done}")
            after = [e for e in events[i + 1 :] if e["type"] in RUN_MARKS]
            if (
                after
                and after[0]["type"] == "phase.started"
                and after[0]["stage"] != next_stage(done)
            ):
                bad.append(f"{where}: resumed at seq {seq} ({done} done) went on at {after[0]}")

    saved = [e for e in events if e["type"] == "file.saved"]
    for stage in STAGES:
        paths = Counter(e["data"]["path"] for e in saved if e["stage"] == stage)
        if dupes := sorted(path for path, n in paths.items() if n > 1):
            bad.append(f"{where}: stage {stage} saved {dupes} more than once")
    announced = {e["data"]["path"]: e for e in saved}  # the newest (a repair's) per path
    files = {f["path"]: f for f in stored.files}
    if set(announced) != set(files) or len(stored.files) != len(files):
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


def verify_rounds(stages: list[str]) -> bool:
    """None, or verify, then any number of (repair, verify)."""
    return stages == ["verify", "repair"] * (len(stages) // 2) + ["verify"] * (
        len(stages) % 2
    ) and (not stages or stages[-1] == "verify")


def next_stage(done: list[str]) -> str:
    """The phase a run resumed after ``done`` must start with."""
    pending = [stage for stage in STAGES if stage not in done]
    if pending:
        return pending[0]
    return "repair" if done[-1] == "verify" else "verify"


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
    ``min_kills`` kills, then holds fire until every generation finished (or ``deadline_s``).
    Streams follow every generation through a `serve` process that runs nothing itself."""
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
                    if len(report.kills) >= params.min_kills:
                        if not await unfinished(pool, ids):
                            break
                        # Cease fire: on a loaded machine a phase (verify runs pytest) can
                        # outlast a worker's life under fire, and the runs would never end.
                        await asyncio.sleep(params.poll_s)
                        continue
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
