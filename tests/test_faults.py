"""Real processes, real faults: workers SIGKILLed at random points, a worker paused past its
lease, a server SIGTERMed mid-run. Whatever happens to the processes, every generation's log
stays exact (seq 1..N, one terminal event and it is last, each phase completed once together
with its files) and a stream following it, reconnecting with Last-Event-ID, sees every stored
event exactly once.

Every process here is a real ``python -m service worker|serve`` on the test's database. The
machinery, and the SIGKILL scenario that ``python -m scripts.soak`` also runs (longer), live
in ``tests/faults.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import httpx
import pytest

from service.store.db import Pool
from tests.conftest import KeyFactory
from tests.faults import (
    LOST_LEASE,
    TERMINAL,
    Children,
    Event,
    SoakParams,
    StreamRecord,
    first_event,
    follow_stream,
    log_violations,
    sigkill_scenario,
    stored_via_api,
    stored_via_pool,
    unfinished,
)
from tests.helpers import SPEC, create_generation, wait_until
from tests.processes import READY_TIMEOUT_S, STOP_TIMEOUT_S, wait_exit

pytestmark = pytest.mark.slow

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
    generation_id = await create_generation(pool)
    first = children.worker("first", env)

    async def streaming() -> bool:
        return await first_event(pool, generation_id, "llm.delta") is not None

    await wait_until(streaming, "the first worker streams text", READY_TIMEOUT_S)
    first.proc.send_signal(signal.SIGSTOP)
    second = children.worker("second", env)
    resumed: Event | None = None

    async def taken_over() -> bool:
        nonlocal resumed
        resumed = await first_event(pool, generation_id, "generation.resumed")
        return resumed is not None

    try:
        await wait_until(taken_over, "the second worker resumes the run", READY_TIMEOUT_S)
    finally:
        first.proc.send_signal(signal.SIGCONT)
    assert resumed is not None

    async def finished() -> bool:
        return await unfinished(pool, [generation_id]) == 0

    async def gave_up() -> bool:
        return any(line in first.log() for line in LOST_LEASE)

    await wait_until(finished, "the generation finishes", 30)
    await wait_until(gave_up, "the paused worker notices it lost the lease", 10)

    stored = await stored_via_pool(pool, "alice", generation_id)
    assert log_violations(generation_id, stored) == []
    started = next(e for e in stored.events if e["type"] == "generation.started")
    assert f":{first.pid}:" in started["data"]["worker"]
    assert f":{second.pid}:" in resumed["data"]["worker"]
    # Readers were told: the paused worker fell silent, then another took over, then one end.
    kinds = [e["type"] for e in stored.events]
    stalled = stored.events[kinds.index("generation.stalled")]
    assert kinds.count("generation.stalled") == 1
    assert stored.events[stalled["seq"]]["seq"] == resumed["seq"]  # the very next event
    assert stalled["data"]["worker"] == started["data"]["worker"]
    # Silent since its last event, at least to the lease's end: the lease (1 s) less one renewal
    # interval (a third of it), as the lease may have been renewed just before that event.
    # silent_s is rounded to 0.1 s.
    assert stalled["data"]["silent_s"] >= 1.0 * 2 / 3 - 0.05
    assert [k for k in kinds if k in TERMINAL] == ["generation.succeeded"]
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


async def test_a_worker_killed_during_verify_is_resumed_there_by_another(
    children: Children, pool: Pool
) -> None:
    """SIGKILL while the sandboxed checks run: the next worker starts the verify round again
    (its checks are in the log twice, its building phases once) and the run ends once."""
    env = {
        "GENSTREAM_LEASE_S": "1.0",
        "GENSTREAM_WORKER_POLL_S": "0.2",
        "GENSTREAM_WORKER_CONCURRENCY": "1",
        "GENSTREAM_OFFLINE_DELAY_S": "0",
    }
    generation_id = await create_generation(pool, verify="tests")
    first = children.worker("first", env)

    async def verifying() -> list[Event] | None:
        events = (await stored_via_pool(pool, "alice", generation_id)).events
        return events if any(e["stage"] == "verify" for e in events) else None

    await wait_until(verifying, "the first worker starts verifying", READY_TIMEOUT_S + 10)
    children.kill(first)
    before = (await stored_via_pool(pool, "alice", generation_id)).events
    assert not [e for e in before if e["type"] == "phase.completed" and e["stage"] == "verify"], (
        "the verify round ended before the kill: the test proves nothing"
    )
    children.worker("second", env)

    async def finished() -> bool:
        return await unfinished(pool, [generation_id]) == 0

    await wait_until(finished, "the second worker finishes the run", 60)
    stored = await stored_via_pool(pool, "alice", generation_id)
    assert log_violations(generation_id, stored) == []
    events = stored.events
    assert events[: len(before)] == before
    resumed = next(e for e in events if e["type"] == "generation.resumed")
    assert resumed["data"]["completed_phases"] == ["core", "models", "api", "tests"]
    verify_starts = [e for e in events if e["type"] == "phase.started" and e["stage"] == "verify"]
    assert len(verify_starts) == 2
    assert verify_starts[-1]["seq"] > resumed["seq"]
    assert [e["data"]["round"] for e in verify_starts] == [1, 1]
    after = events[events.index(resumed) :]
    assert [e["data"]["step"] for e in after if e["type"] == "check.completed"] == [
        "compile",
        "import",
        "tests",
    ]
    assert events[-1]["type"] == "generation.succeeded"
    assert events[-1]["data"]["verification"]["ok"] is True


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

                await wait_until(a_runs_it, "A starts the run", READY_TIMEOUT_S)
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
