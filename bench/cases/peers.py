"""Case 12: the peers a user would pick instead of genstream for resumable LLM event streams,
measured in the same run and on the same shapes as genstream.

* **Redis Streams** (``bench/peer_redis.py``): XADD per event, XREAD BLOCK readers resuming
  from an id, AOF at ``appendfsync always`` (the durability of genstream's COMMIT) and at
  ``everysec``: two servers of the bench's own.
* **NATS JetStream** (``bench/peer_nats.py``): a file-backed stream, a subject per generation,
  a publish awaiting its ack per event, ordered consumers from a sequence. Its file store syncs
  on an interval, not per message: the output says so.
* **genstream**: case 1's append path, case 2's SSE client, case 4's catch-up, and its
  PostgreSQL killed for the crash.
* **bare PostgreSQL** (``bench/peer_postgres.py``), the reference: what the database under
  genstream does with nothing on top, so that genstream's ratio to it is visible.

The shapes (GitHub issue 19, "The peers a user would pick instead"):

1. append throughput: 1 / 4 / 16 concurrent writers, one stream (generation) each, events/s
   over a fixed window;
2. delivery: 100 and 1,000 live streams, 1,000 events/s in total spread over them; start of the
   write -> the reader has the event, p50/p99. genstream over real SSE through ``serve``; the
   peers at their client library in this process (no HTTP hop of their own);
3. catch-up: a 100,000-event stream read from its start, events/s;
4. crash: kill -9 of the server mid-append (8 writers), restart, acknowledged writes missing.

Within a repetition the systems take turns, the order rotating between repetitions (as in
case 2), so a slow minute is shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from bench import peer_nats, peer_redis
from bench.appends import bare_rate, grouped_rate
from bench.cases.catchup import make_generation, read_bare, read_sse
from bench.cases.streaming import measurement_row, summary
from bench.core import (
    Context,
    Distribution,
    Outcome,
    Summary,
    Table,
    fmt_summary,
    ratio,
    row,
)
from bench.genstream import claimed_generations, finish, worker_writers
from bench.load import Measurement, Shape, measure
from bench.peer_load import (
    PROBE_BYTES,
    Crash,
    LivePeer,
    fsync_probe,
    measure_live,
    missing_binaries,
)
from bench.peer_nats import NatsPeer
from bench.peer_postgres import BarePostgres, CrashCluster, bare_crash, genstream_crash
from bench.peer_redis import RedisPeer
from bench.targets import GenstreamTarget, bench_pool

SYSTEMS = ("redis-always", "redis-everysec", "nats", "genstream", "postgres")
LABELS = {
    "redis-always": "Redis, appendfsync always",
    "redis-everysec": "Redis, appendfsync everysec",
    "nats": "NATS JetStream (file)",
    "genstream": "genstream",
    "postgres": "bare PostgreSQL",
}
MEASURED_AT = {
    "redis-always": "redis-py + hiredis (XREAD BLOCK)",
    "redis-everysec": "redis-py + hiredis (XREAD BLOCK)",
    "nats": "nats-py (ordered consumer)",
    "genstream": "SSE client, over HTTP from serve",
    "postgres": "asyncpg (LISTEN)",
}
ACKED_WHEN = {
    "redis-always": "fsynced (AOF)",
    "redis-everysec": "written to the kernel; fsynced ~1 s later",
    "nats": "written to the kernel; fsynced every 60 s",
    "genstream": "WAL fsynced (COMMIT)",
    "postgres": "WAL fsynced (COMMIT)",
}
WRITERS = (1, 4, 16)


@dataclass(frozen=True, slots=True)
class Sizes:
    window_s: float  # each append throughput window (after appends.run_writers' warm-up)
    streams: tuple[int, ...]  # live streams of the delivery shapes
    rate: float  # events/s in total over them
    live_s: float  # each delivery window
    warm_s: float  # delivery warm-up (not measured)
    drain_s: float  # how long a delivery waits for the last events
    catch_up_events: int
    crash_writers: int
    crash_run_s: float  # writing before the kill
    probe_writes: int  # fdatasyncs per disk probe


def sizes(quick: bool) -> Sizes:
    """Full: the issue's shapes, three repetitions in about four minutes on 2 cores. Quick: a
    smoke run well under a minute."""
    if quick:
        return Sizes(
            window_s=0.3, streams=(10, 50), rate=200, live_s=0.5, warm_s=0.2, drain_s=5.0,
            catch_up_events=5_000, crash_writers=4, crash_run_s=0.3, probe_writes=50,
        )  # fmt: skip
    return Sizes(
        window_s=1.0, streams=(100, 1000), rate=1000, live_s=1.5, warm_s=0.3, drain_s=5.0,
        catch_up_events=100_000, crash_writers=8, crash_run_s=0.5, probe_writes=500,
    )  # fmt: skip


def _rotated(rep: int) -> tuple[str, ...]:
    shift = rep % len(SYSTEMS)
    return SYSTEMS[shift:] + SYSTEMS[:shift]


@dataclass(slots=True)
class Peers:
    """The servers of the peers, started once for the case (the crash kills and restarts
    them last)."""

    redis: dict[str, RedisPeer]
    nats: NatsPeer


async def _throughput(
    ctx: Context, size: Sizes, peers: Peers
) -> dict[tuple[int, str], list[float]]:
    """Shape 1: events/s by (writers, system). genstream and the bare reference are case 1's
    own measurements at one event per append: genstream through the appender, as a worker's
    runs append (group commit), the bare loop each writer committing alone."""
    rates: dict[tuple[int, str], list[float]] = {}
    for rep in ctx.reps():
        for writers in WRITERS:
            for system in _rotated(rep):
                if system == "genstream":
                    rate = await grouped_rate(ctx.database_url, writers, 1, size.window_s)
                elif system == "postgres":
                    rate = await bare_rate(ctx.database_url, writers, 1, size.window_s)
                elif system == "nats":
                    rate = await peers.nats.append_rate(writers, size.window_s)
                else:
                    rate = await peers.redis[system].append_rate(writers, size.window_s)
                rates.setdefault((writers, system), []).append(rate)
    return rates


@dataclass(slots=True)
class Reads:
    live: dict[tuple[int, str], list[Measurement]]
    writes: dict[tuple[int, str], list[Distribution]]  # the same shapes' writes alone
    catch_up: dict[str, list[float]]


async def _delivery_and_catch_up(
    ctx: Context, size: Sizes, peers: Peers, phases: dict[str, float]
) -> Reads:
    """Shapes 2 and 3, which need genstream's ``serve`` (and the bare reference's claims)."""
    reads = Reads({}, {}, {system: [] for system in SYSTEMS})
    pool = await bench_pool(ctx.database_url)
    try:
        claims = await claimed_generations(pool, max(size.streams))
        async with worker_writers(pool, claims) as writers:
            genstream = await GenstreamTarget.start(
                ctx.database_url, ctx.work_dir, pool, claims, writers
            )
            try:
                started = time.perf_counter()
                bare = await BarePostgres.start(ctx.database_url, max(size.streams))
                others: dict[str, LivePeer] = {
                    **peers.redis, "nats": peers.nats, "postgres": bare
                }  # fmt: skip
                try:
                    await _delivery(ctx, size, genstream, others, reads)
                finally:
                    await bare.stop()
                phases["delivery"] = time.perf_counter() - started
                started = time.perf_counter()
                await _catch_up(ctx, size, peers, genstream, reads.catch_up)
                phases["catch-up"] = time.perf_counter() - started
            finally:
                await genstream.stop()
            await finish(writers)
    finally:
        await pool.close()
    return reads


async def _delivery(
    ctx: Context,
    size: Sizes,
    genstream: GenstreamTarget,
    peers: dict[str, LivePeer],
    reads: Reads,
) -> None:
    """Shape 2, with each write's own time to its acknowledgement (genstream's: its append's
    COMMIT, as case 2 takes it) from the same writes."""
    shapes = [Shape("spread", streams, size.rate, size.live_s) for streams in size.streams]
    for rep in ctx.reps():
        for index, shape in enumerate(shapes):
            for system in _rotated(rep):
                if system == "genstream":
                    genstream.append_ns.clear()
                    m = await measure(genstream, shape, warm_s=size.warm_s, drain_s=size.drain_s)
                    writes = Distribution.of_ns(genstream.append_ns)
                else:
                    peer = peers[system]
                    peer.write_ns.clear()
                    m = await measure_live(peer, shape, warm_s=size.warm_s, drain_s=size.drain_s)
                    writes = Distribution.of_ns(peer.write_ns)
                reads.live.setdefault((index, system), []).append(m)
                reads.writes.setdefault((index, system), []).append(writes)


async def _catch_up(
    ctx: Context,
    size: Sizes,
    peers: Peers,
    genstream: GenstreamTarget,
    rates: dict[str, list[float]],
) -> None:
    """Each system's stream filled once (the three at once: nothing is measured yet), read once
    unmeasured (caches, lazy imports), then once per repetition. Redis is read on its
    ``always`` server: reading does not fsync."""
    events = size.catch_up_events
    redis = peers.redis["redis-always"]
    generation_id, key, (stream, subject) = await asyncio.gather(
        make_generation(ctx.database_url, events), redis.fill(events), peers.nats.fill(events)
    )
    readers: dict[str, Callable[[], Awaitable[float]]] = {
        "redis-always": lambda: redis.catch_up(key, events),
        "nats": lambda: peers.nats.catch_up(stream, subject, events),
        "genstream": lambda: _sse_rate(genstream, generation_id, events),
        "postgres": lambda: read_bare(ctx.database_url, generation_id, events),
    }
    try:
        for read in readers.values():
            await read()
        for rep in ctx.reps():
            for system in _rotated(rep):
                if system in readers:
                    rates[system].append(await readers[system]())
    finally:
        await redis.drop(key)
        await peers.nats.drop(stream)


async def _sse_rate(genstream: GenstreamTarget, generation_id: UUID, events: int) -> float:
    return (await read_sse(genstream.serve, generation_id, events)).events_per_s


async def _crashes(ctx: Context, size: Sizes, peers: Peers) -> dict[str, list[Crash]]:
    crashes: dict[str, list[Crash]] = {system: [] for system in SYSTEMS}
    cluster = await CrashCluster.start()
    try:
        for rep in ctx.reps():
            for system in _rotated(rep):
                writers, run_s = size.crash_writers, size.crash_run_s
                if system == "genstream":
                    crash = await genstream_crash(cluster, writers, run_s)
                elif system == "postgres":
                    crash = await bare_crash(cluster, writers, run_s)
                elif system == "nats":
                    crash = await peers.nats.crash(writers, run_s)
                else:
                    crash = await peers.redis[system].crash(writers, run_s)
                crashes[system].append(crash)
    finally:
        await cluster.destroy()
    return crashes


async def _disk(ctx: Context, size: Sizes) -> dict[bool, list[Distribution]]:
    """``fsync_probe`` in the bench's work directory (the filesystem of every server's data
    here), each kind once a repetition; keyed by ``preallocated``."""
    disk: dict[bool, list[Distribution]] = {False: [], True: []}
    for rep in ctx.reps():
        for preallocated in (rep % 2 == 0, rep % 2 == 1):
            disk[preallocated].append(
                await asyncio.to_thread(
                    fsync_probe, ctx.work_dir, size.probe_writes, preallocated=preallocated
                )
            )
    return disk


async def run(ctx: Context) -> Outcome:
    if (reason := missing_binaries()) is not None:
        return Outcome(status="failed", reason=reason)
    size = sizes(ctx.quick)
    outcome = Outcome(parameters=_parameters(size))
    async with contextlib.AsyncExitStack() as stack:
        redis: dict[str, RedisPeer] = {}
        for fsync in peer_redis.FSYNC_MODES:
            redis[f"redis-{fsync}"] = peer = await RedisPeer.start(ctx.work_dir, fsync)
            stack.push_async_callback(peer.stop)
        nats = await NatsPeer.start(ctx.work_dir)
        stack.push_async_callback(nats.stop)
        peers = Peers(redis, nats)
        phases: dict[str, float] = {}
        started = time.perf_counter()
        rates = await _throughput(ctx, size, peers)
        phases["append"] = time.perf_counter() - started
        reads = await _delivery_and_catch_up(ctx, size, peers, phases)
        started = time.perf_counter()
        crashes = await _crashes(ctx, size, peers)
        phases["crash"] = time.perf_counter() - started
    disk = await _disk(ctx, size)  # the servers stopped: the disk to itself, or nearly
    outcome.parameters["phase_s"] = {name: round(value, 1) for name, value in phases.items()}

    outcome.tables.append(_throughput_table(outcome, size, rates))
    outcome.tables.append(_delivery_table(outcome, size, reads.live))
    outcome.tables.append(_writes_table(outcome, size, reads))
    outcome.tables.append(_catch_up_table(outcome, size, reads.catch_up))
    outcome.tables.append(_crash_table(outcome, size, crashes))
    outcome.tables.append(_disk_table(outcome, size, disk))
    outcome.notes += _notes(size)
    return outcome


def _parameters(size: Sizes) -> dict[str, Any]:
    return {
        "window_s": size.window_s,
        "writers": WRITERS,
        "live_streams": size.streams,
        "live_events_per_s": size.rate,
        "live_s": size.live_s,
        "warm_s": size.warm_s,
        "drain_s": size.drain_s,
        "catch_up_events": size.catch_up_events,
        "crash_writers": size.crash_writers,
        "crash_run_s": size.crash_run_s,
        "fsync_probe_writes": size.probe_writes,
        "redis_server": peer_redis.version(),
        "nats_server": peer_nats.version(),
        "redis_py": importlib.metadata.version("redis"),
        "hiredis": importlib.metadata.version("hiredis"),
        "nats_py": importlib.metadata.version("nats-py"),
        "systems": LABELS,
        "delivery_measured_at": MEASURED_AT,
        "acknowledged_when": ACKED_WHEN,
    }


def _throughput_table(
    outcome: Outcome, size: Sizes, rates: dict[tuple[int, str], list[float]]
) -> Table:
    table = Table(
        f"Append throughput, one stream per writer, one event per durable write "
        f"({size.window_s:g} s windows; events/s, median (min-max) over repetitions)",
        ["writers", *(LABELS[s] for s in SYSTEMS), "genstream / bare PG",
         "genstream / Redis always"],
    )  # fmt: skip
    for writers in WRITERS:
        got = {system: rates[(writers, system)] for system in SYSTEMS}
        to_bare = ratio(got["genstream"], got["postgres"])
        to_redis = ratio(got["genstream"], got["redis-always"])
        table.add(
            str(writers),
            *(fmt_summary(Summary.of(got[system])) for system in SYSTEMS),
            fmt_summary(to_bare),
            fmt_summary(to_redis),
        )
        for system in SYSTEMS:
            outcome.rows.append(
                row(
                    {"shape": "append", "system": system, "writers": writers},
                    events_per_s=Summary.of(got[system]),
                )
            )
        outcome.rows.append(
            row(
                {"shape": "append", "writers": writers, "ratios": True},
                ratio_genstream_to_bare=to_bare,
                ratio_genstream_to_redis_always=to_redis,
                ratio_genstream_to_redis_everysec=ratio(got["genstream"], got["redis-everysec"]),
                ratio_genstream_to_nats=ratio(got["genstream"], got["nats"]),
            )
        )
    return table


def _delivery_table(
    outcome: Outcome, size: Sizes, live: dict[tuple[int, str], list[Measurement]]
) -> Table:
    table = Table(
        f"Delivery, {size.rate:,.0f} events/s in total spread over the streams: start of the "
        "write -> the reader has the event (ms, median (min-max) over repetitions)",
        ["streams", "system", "measured at", "p50 ms", "p99 ms", "max ms", "undelivered"],
    )
    for index, streams in enumerate(size.streams):
        for system in SYSTEMS:
            measurements = live[(index, system)]
            missing = sum(m.undelivered for m in measurements)
            expected = sum(m.expected for m in measurements)
            table.add(
                f"{streams:,}",
                LABELS[system],
                MEASURED_AT[system],
                fmt_summary(summary(measurements, "p50_ms")),
                fmt_summary(summary(measurements, "p99_ms")),
                fmt_summary(summary(measurements, "max_ms")),
                "0" if not missing else f"{missing:,} of {expected:,}",
            )
            shape = Shape("spread", streams, size.rate, size.live_s)
            result = measurement_row(shape, system, measurements)
            result["params"].update(
                shape="delivery", system=system, measured_at=MEASURED_AT[system]
            )
            outcome.rows.append(result)
    return table


def _writes_table(outcome: Outcome, size: Sizes, reads: Reads) -> Table:
    """How much of each delivery is the write's own acknowledgement (for the durable ones its
    fsync): the part no reader can take away."""
    table = Table(
        "The write alone (start -> acknowledged) beside delivery, same writes (ms, median "
        "(min-max) over repetitions)",
        ["streams", "system", "write p50", "write p99", "delivery p50", "delivery p99"],
    )
    for index, streams in enumerate(size.streams):
        for system in SYSTEMS:
            writes = reads.writes[(index, system)]
            delivered = reads.live[(index, system)]
            table.add(
                f"{streams:,}",
                LABELS[system],
                fmt_summary(Summary.of([d.p50 for d in writes])),
                fmt_summary(Summary.of([d.p99 for d in writes])),
                fmt_summary(summary(delivered, "p50_ms")),
                fmt_summary(summary(delivered, "p99_ms")),
            )
            outcome.rows.append(
                row(
                    {"shape": "write alone", "system": system, "streams": streams},
                    write_p50_ms=Summary.of([d.p50 for d in writes]),
                    write_p99_ms=Summary.of([d.p99 for d in writes]),
                    write_max_ms=Summary.of([d.max for d in writes]),
                )
            )
    return table


def _catch_up_table(outcome: Outcome, size: Sizes, rates: dict[str, list[float]]) -> Table:
    readers = {
        "redis-always": f"XRANGE pages of {peer_redis.PAGE:,}",
        "nats": "one ordered consumer from the first sequence",
        "genstream": "SSE from after=0 (case 4's httpx reader)",
        "postgres": "asyncpg keyset pages of 1,000 (case 4's)",
    }
    table = Table(
        f"Catch-up: a {size.catch_up_events:,}-event stream read from its start (events/s)",
        ["system", "reader", "events/s", "vs genstream"],
    )
    for system, reader in readers.items():
        relative = ratio(rates[system], rates["genstream"])
        label = "Redis" if system == "redis-always" else LABELS[system]
        table.add(label, reader, fmt_summary(Summary.of(rates[system])), fmt_summary(relative))
        outcome.rows.append(
            row(
                {"shape": "catch-up", "system": system, "events": size.catch_up_events},
                events_per_s=Summary.of(rates[system]),
                ratio_to_genstream=relative,
            )
        )
    return table


def _crash_table(outcome: Outcome, size: Sizes, crashes: dict[str, list[Crash]]) -> Table:
    table = Table(
        f"Crash: kill -9 of the server mid-append ({size.crash_writers} writers, after "
        f"{size.crash_run_s:g} s), restart; acknowledged writes missing after it",
        [
            "system",
            "a write is acknowledged when",
            "acknowledged (per repetition)",
            "missing",
            "restart s",
        ],
    )
    for system in SYSTEMS:
        runs = crashes[system]
        table.add(
            LABELS[system] + (" (its PostgreSQL killed)" if system == "genstream" else ""),
            ACKED_WHEN[system],
            _counts([c.acknowledged for c in runs]),
            _counts([c.missing for c in runs]),
            fmt_summary(Summary.of([c.restart_s for c in runs])),
        )
        result = row(
            {"shape": "crash", "system": system, "writers": size.crash_writers,
             "run_s": size.crash_run_s},
            acknowledged=sum(c.acknowledged for c in runs),
            missing=sum(c.missing for c in runs),
            restart_s=Summary.of([c.restart_s for c in runs]),
        )  # fmt: skip
        result["repetitions"] = [c.as_json() for c in runs]
        outcome.rows.append(result)
    return table


def _disk_table(outcome: Outcome, size: Sizes, disk: dict[bool, list[Distribution]]) -> Table:
    table = Table(
        f"The disk under them: write(2) of {PROBE_BYTES} bytes + fdatasync, "
        f"{size.probe_writes:,} times (ms, median (min-max) over repetitions)",
        ["file", "p50", "p99", "max"],
    )
    kinds = {
        False: "growing with each write (Redis's AOF, NATS's blocks)",
        True: "written in full and synced first (PostgreSQL's WAL segments)",
    }
    for preallocated, label in kinds.items():
        found = disk[preallocated]
        cells = [Summary.of([getattr(d, name) for d in found]) for name in ("p50", "p99", "max")]
        table.add(label, *(fmt_summary(cell) for cell in cells))
        outcome.rows.append(
            row(
                {"shape": "disk", "preallocated": preallocated, "writes": size.probe_writes},
                fdatasync_p50_ms=cells[0],
                fdatasync_p99_ms=cells[1],
                fdatasync_max_ms=cells[2],
            )
        )
    return table


def _counts(values: Sequence[int]) -> str:
    """Every repetition's count: a crash's losses are not summarised away."""
    return " / ".join(f"{value:,}" for value in values)


def _notes(size: Sizes) -> list[str]:
    return [
        "delivery is measured where each system hands the event over: genstream at an SSE "
        "client over HTTP from its serve process (case 2's client); Redis, NATS and bare "
        "PostgreSQL at their client library in the bench process, with no HTTP hop of their "
        "own (a service built on them would add one).",
        "NATS JetStream's file store (Debian's nats-server 2.9.10) syncs on an interval, not "
        "per message: a publish is acknowledged once the message is written to the kernel, "
        "and the store is fsynced every 60 s (2.10 and later: `sync_interval`, 2 minutes by "
        "default). Redis at everysec fsyncs about once a second.",
        "kill -9 ends the process, not the machine: the kernel's page cache survives it, so "
        "the crash counts only acknowledged writes that had not reached the kernel. What a "
        "kernel crash or a power cut would lose (up to ~1 s of writes at everysec, up to the "
        "sync interval for NATS, nothing at always or for PostgreSQL) is not measured here.",
        "the write alone is the writer's start -> the server's acknowledgement (genstream: "
        "the append's COMMIT returned) of the delivery windows' own writes; where its p99 is "
        "the delivery's p99, the tail is the write's, not the readers'.",
        "genstream's durability is its PostgreSQL's: its crash kills every process of a "
        "throwaway cluster of the case's own (default settings, never the bench's database), "
        "under genstream's append path and the bare reference alike.",
        "Redis: AOF on, RDB snapshots and automatic AOF rewrites off; writers XADD on a "
        "connection each, live readers on a connection each. NATS: writers share one "
        "connection. Both servers run from Debian's packages (make peers).",
    ]
