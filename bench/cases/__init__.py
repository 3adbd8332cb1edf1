"""The case registry. Each case keeps its number (headings, ``--help``, the JSON, BENCHMARKS.md),
so runs can be compared case by case."""

from __future__ import annotations

from bench.cases import (
    append,
    catchup,
    ceiling,
    delivery,
    endtoend,
    logscale,
    page,
    peer,
    peers,
    scale,
    snapshot,
    verify,
)
from bench.core import Case
from bench.peer_load import missing_binaries

CASES: tuple[Case, ...] = (
    Case(
        "append",
        1,
        "Append throughput",
        append.run,
        "events/s through genstream's append path at 1/4/16 concurrent generations, 1 and "
        "10 events per append, beside a bare asyncpg INSERT + pg_notify loop",
    ),
    Case(
        "delivery",
        2,
        "Delivery latency",
        delivery.run,
        "start of append -> SSE client has it, p50/p95/p99/max, beside the in-memory ceiling "
        "and the old polling design; memory per idle stream",
    ),
    Case(
        "streams-scale",
        3,
        "Concurrent streams",
        scale.run,
        "1,000/5,000/10,000 streams on one serve process: connections, memory, p99, beside "
        "the in-memory ceiling",
    ),
    Case(
        "catch-up",
        4,
        "Catch-up",
        catchup.run,
        "a 100,000-event generation read over SSE from after=0, beside a bare keyset read",
    ),
    Case(
        "end-to-end",
        5,
        "End to end",
        endtoend.run,
        "50 concurrent offline generations: wall time, events/s, every stream got every event",
    ),
    Case(
        "peer",
        6,
        "The peer (eventsourcing)",
        peer.run,
        "the eventsourcing library's PostgreSQL recorder, 1 and 4 writers, beside genstream",
    ),
    Case(
        "sse-ceiling",
        7,
        "The SSE ceiling",
        ceiling.run,
        "a minimal in-memory SSE fan-out on one uvicorn process: latency, sends, memory",
    ),
    Case(
        "verify",
        8,
        "Verification",
        verify.run,
        "the sandbox's start-up beside a bare subprocess; verify's steps for 1/3/10-entity "
        "offline projects; the verify phase's share of a whole offline run",
    ),
    Case(
        "snapshot",
        9,
        "Snapshot",
        snapshot.run,
        "opening a finished 100/10,000/100,000-event run from its snapshot beside replaying "
        "every event: bytes sent and time to the stream's end (httpx), time to the page's "
        "first complete render in Chromium",
    ),
    Case(
        "page",
        10,
        "The page on a long run",
        page.run,
        "a finished 10,000-event run opened in Chromium (first paint, time to its first "
        "complete render, long tasks, clicks by Event Timing) and a live one followed at 500 "
        "events/s (frame times, long tasks, how far behind)",
    ),
    Case(
        "log-scale",
        11,
        "The log on the way up",
        logscale.run,
        "the log filled by COPY into monthly partitions to 10^5/10^6/10^7 events (--sizes), and "
        "at each size: append throughput, stream open and catch-up, a global- and an "
        "owner-feed page, every analytics view, bytes per event and partition; at the largest, "
        "a retention pass (dry, then real); the curve across sizes",
        default=False,  # minutes to hours: only with --case log-scale
    ),
    Case(
        "peers",
        12,
        "The peers a user would pick instead",
        peers.run,
        "Redis Streams (AOF always and everysec) and NATS JetStream beside genstream and bare "
        "PostgreSQL: append throughput at 1/4/16 writers, delivery p50/p99 at 100 and 1,000 "
        "live streams, catch-up of a 100,000-event stream, acknowledged writes lost to a "
        "kill -9",
        requires=missing_binaries,
    ),
)

BY_NAME = {case.name: case for case in CASES}
