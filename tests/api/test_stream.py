"""``GET /api/generations/{id}/stream``: SSE against a real uvicorn server and real PostgreSQL.

Generations are created through the API. Where a test needs exact control over what is in the
log and when, the server's worker is off (``worker_concurrency=0``) and the test appends events
itself through the event log, as a worker in another process would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from service.access import keys
from service.access.quotas import StreamSlots
from service.api.stream import HoldingSlot
from service.events import EventType, NewEvent
from service.generation.runs import queued_event
from service.store import event_log, generations
from service.store.db import Pool
from service.streams import pacing
from tests.conftest import AppFactory, KeyFactory, RunningApp
from tests.helpers import (
    SPEC,
    STARTED,
    append,
    chain_after,
    create_via_api,
    delta,
    events_via_api,
    wait_for_status,
    wait_until,
)

CONTRACT_FIELDS = [
    "generation_id", "seq", "type", "status", "stage", "progress", "message", "timestamp", "data",
    "chain",
]  # fmt: skip
TERMINAL_TYPES = {"generation.succeeded", "generation.failed", "generation.cancelled"}
TERMINAL_STATUSES = {"succeeded", "failed", "cancelled"}
SSE_RETRY_MS = 2000  # the Settings default the fixtures keep


# --- helpers ---------------------------------------------------------------------------------


def stream_url(generation_id: str) -> str:
    return f"/api/generations/{generation_id}/stream"


@dataclass
class Received:
    """What one SSE connection delivered."""

    status_code: int
    headers: httpx.Headers
    retry: int | None = None
    frames: list[ServerSentEvent] = field(default_factory=list)
    closed_by_server: bool = False
    first_is_retry: bool = False

    @property
    def seqs(self) -> list[int]:
        return [int(frame.id) for frame in self.frames]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(frame.data) for frame in self.frames]


async def read_stream(
    client: httpx.AsyncClient,
    generation_id: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str | int] | None = None,
    stop_after: int | None = None,
    timeout: float = 10.0,
    received: Received | None = None,
) -> Received:
    """Read SSE frames until the server closes (or ``stop_after`` frames, then hang up).

    ``received`` lets a concurrent caller watch the frames as they arrive.
    """
    async with (
        asyncio.timeout(timeout),
        aconnect_sse(
            client,
            "GET",
            stream_url(generation_id),
            headers=dict(headers or {}),
            params=dict(params or {}),
        ) as source,
    ):
        response = source.response
        if received is None:
            received = Received(response.status_code, response.headers)
        else:
            received.status_code, received.headers = response.status_code, response.headers
        assert response.status_code == 200, (await response.aread()).decode()
        first = True
        async for sse in source.aiter_sse():
            if sse.retry is not None and not sse.data:
                received.retry = sse.retry
                received.first_is_retry = received.first_is_retry or first
                first = False
                continue
            first = False
            received.frames.append(sse)
            if stop_after is not None and len(received.frames) >= stop_after:
                return received
        received.closed_by_server = True
    return received


async def status_of(
    client: httpx.AsyncClient,
    generation_id: str,
    *,
    headers: Mapping[str, str] | None = None,
    params: Mapping[str, str | int] | None = None,
) -> tuple[int, httpx.Headers, bytes]:
    """Status, headers and body of a stream request that is expected NOT to stream.

    A 200 is not read (it would follow forever): its body comes back empty.
    """
    async with (
        asyncio.timeout(10),
        client.stream(
            "GET", stream_url(generation_id), headers=dict(headers or {}), params=dict(params or {})
        ) as response,
    ):
        body = b"" if response.status_code == 200 else await response.aread()
        return response.status_code, response.headers, body


def check_frames(received: Received, generation_id: str) -> None:
    """Every frame has id = seq, event = type, one JSON data line in the contract's shape."""
    for frame in received.frames:
        assert "\n" not in frame.data, "an event must travel as ONE data line"
        body = json.loads(frame.data)
        assert list(body) == CONTRACT_FIELDS
        assert body["generation_id"] == generation_id
        assert frame.id == str(body["seq"])
        assert frame.event == body["type"]
        assert isinstance(body["progress"], int | float)
        assert isinstance(body["data"], dict)
        assert body["timestamp"].endswith("Z")


SUCCEEDED = NewEvent(EventType.SUCCEEDED, "done", 1.0, "Generation finished")


async def wait_for_frames(received: Received, count: int, timeout: float) -> None:
    await wait_until(lambda: len(received.frames) >= count, f"{count} frames", timeout)


# --- replay of a finished run ----------------------------------------------------------------


async def test_a_stream_of_a_finished_run_sends_retry_then_every_event_once_and_closes(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]
        received = await read_stream(client, generation_id)
        stored = await events_via_api(client, generation_id)

    assert received.first_is_retry, "the first thing sent must be `retry: <ms>`"
    assert received.retry == SSE_RETRY_MS
    assert last_seq > 5
    assert received.seqs == list(range(1, last_seq + 1))
    check_frames(received, generation_id)
    assert received.frames[-1].event == "generation.succeeded"
    assert received.closed_by_server, "the server must close the stream after the terminal event"
    assert received.events == stored, "the stream must carry exactly the stored events"


async def test_frames_are_id_event_data_lines_on_the_wire(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]
        async with asyncio.timeout(10):
            response = await client.get(stream_url(generation_id))
    assert response.status_code == 200
    blocks = response.text.split("\n\n")
    assert blocks[-1] == "", "the stream must end on a complete frame"
    assert blocks[0] == f"retry: {SSE_RETRY_MS}"
    frames = blocks[1:-1]
    assert len(frames) == last_seq
    for seq, block in enumerate(frames, start=1):
        id_line, event_line, data_line = block.split("\n")
        body = json.loads(data_line.removeprefix("data: "))
        assert id_line == f"id: {seq}"
        assert event_line == f"event: {body['type']}"
        assert data_line.startswith("data: {")
        assert body["seq"] == seq


# --- following a live run --------------------------------------------------------------------


FORGED_TYPES = [
    'llm.delta\nid: 999\nevent: generation.succeeded\ndata: {"injected":true}',
    'llm.delta\rid: 998\revent: generation.failed\rdata: {"injected":true}',
    "llm.delta\r\n\r\nid: 997",
]


async def test_a_stored_type_with_line_breaks_cannot_forge_frames(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    """Whatever reaches the log (an import, a hand-edited row), a line break in a stored field
    stays inside its own line on the wire: SSE ends a line at CR, LF or CRLF alike."""
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        async with pool.acquire() as conn:
            for seq, forged in enumerate(FORGED_TYPES, start=2):
                await conn.execute(
                    "INSERT INTO generation_events"
                    " (generation_id, seq, type, status, stage, progress, message, payload)"
                    " VALUES ($1, $2, $3, 'running', 'core', 0.1, 'forged', '{}')",
                    UUID(generation_id),
                    seq,
                    forged,
                )
            await conn.execute(
                "UPDATE generations SET last_seq = $2 WHERE id = $1",
                UUID(generation_id),
                len(FORGED_TYPES) + 1,
            )
        last_seq = await append(pool, generation_id, SUCCEEDED)
        async with asyncio.timeout(10):
            response = await client.get(stream_url(generation_id))
    assert response.status_code == 200
    # The SSE grammar: a line ends at CRLF, LF or CR; a blank line ends a frame.
    frames: list[dict[str, list[str]]] = [{}]
    for line in re.split(r"\r\n|\r|\n", response.text):
        if not line:
            frames.append({})
            continue
        name, _, value = line.partition(":")
        frames[-1].setdefault(name, []).append(value.removeprefix(" "))
    frames = [frame for frame in frames if frame and "retry" not in frame]
    assert [frame["id"] for frame in frames] == [[str(seq)] for seq in range(1, last_seq + 1)]
    assert {name for frame in frames for name in frame} == {"id", "event", "data"}
    events = [json.loads("\n".join(frame["data"])) for frame in frames]
    assert [event["seq"] for event in events] == list(range(1, last_seq + 1))
    assert [event["type"] for event in events[1:-1]] == FORGED_TYPES  # the data says it all
    for frame, forged in zip(frames[1:-1], FORGED_TYPES, strict=True):
        (event_line,) = frame["event"]
        assert "\n" not in event_line
        assert "\r" not in event_line
        assert event_line.startswith("llm.delta")
        assert event_line != forged
    assert frames[-1]["event"] == ["generation.succeeded"]


async def test_a_stream_opened_before_the_run_starts_gets_every_event_once_in_order(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        received = Received(0, httpx.Headers())
        reader = asyncio.create_task(read_stream(client, generation_id, received=received))
        await wait_for_frames(received, 1, 5)  # the queued event: the stream is live now
        await append(pool, generation_id, STARTED)
        for batch in range(6):
            await append(pool, generation_id, *(delta(batch * 10 + i) for i in range(batch + 1)))
            await asyncio.sleep(0.02)
        last_seq = await append(pool, generation_id, delta(99), SUCCEEDED)
        await asyncio.wait_for(reader, 10)

    assert received.seqs == list(range(1, last_seq + 1))
    check_frames(received, generation_id)
    assert received.frames[0].event == "generation.queued"
    assert received.frames[-1].event == "generation.succeeded"
    assert received.closed_by_server


async def test_a_stream_opened_mid_run_gets_every_event_once_in_order(
    app_factory: AppFactory, api_key: str
) -> None:
    async with (
        app_factory(offline_delay_s=0.004) as running,
        running.client(api_key) as client,
    ):
        generation_id = (await create_via_api(client))["id"]
        async with asyncio.timeout(10):  # wait until the run is under way
            while len(await events_via_api(client, generation_id)) < 4:
                await asyncio.sleep(0.01)
        received = Received(0, httpx.Headers())
        reader = asyncio.create_task(read_stream(client, generation_id, received=received))
        await wait_for_frames(received, 1, 5)
        state = (await client.get(f"/api/generations/{generation_id}")).json()
        await asyncio.wait_for(reader, 10)
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]

    assert state["status"] == "running", "the stream must have been open while the run ran"
    assert received.seqs == list(range(1, last_seq + 1))
    check_frames(received, generation_id)
    assert received.frames[-1].event == "generation.succeeded"
    assert received.closed_by_server


# --- resuming --------------------------------------------------------------------------------


async def test_resuming_with_last_event_id_gets_exactly_the_rest(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]
        k = 7
        dropped = await read_stream(client, generation_id, stop_after=k)
        assert dropped.seqs == list(range(1, k + 1))
        resumed = await read_stream(
            client, generation_id, headers={"Last-Event-ID": dropped.frames[-1].id}
        )
    assert resumed.retry == SSE_RETRY_MS
    assert resumed.seqs == list(range(k + 1, last_seq + 1))
    check_frames(resumed, generation_id)
    assert resumed.closed_by_server


async def test_resuming_with_after_query_gets_exactly_the_rest(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]
        k = 5
        resumed = await read_stream(client, generation_id, params={"after": k})
    assert resumed.seqs == list(range(k + 1, last_seq + 1))
    check_frames(resumed, generation_id)
    assert resumed.closed_by_server


async def test_last_event_id_header_wins_over_after_query(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]
        later_header = await read_stream(
            client, generation_id, headers={"Last-Event-ID": "6"}, params={"after": 2}
        )
        earlier_header = await read_stream(
            client, generation_id, headers={"Last-Event-ID": "2"}, params={"after": 6}
        )
    assert later_header.seqs == list(range(7, last_seq + 1))
    assert earlier_header.seqs == list(range(3, last_seq + 1))


async def test_a_client_dropped_mid_run_resumes_with_what_was_appended_while_away(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        await append(pool, generation_id, STARTED, delta(1), delta(2))  # seq 2..4
        first = await read_stream(client, generation_id, stop_after=4)
        await append(pool, generation_id, delta(3), delta(4))  # 5..6 while disconnected
        received = Received(0, httpx.Headers())
        reader = asyncio.create_task(
            read_stream(client, generation_id, headers={"Last-Event-ID": "4"}, received=received)
        )
        await wait_for_frames(received, 2, 5)
        last_seq = await append(pool, generation_id, delta(5), SUCCEEDED)  # 7..8 live
        await asyncio.wait_for(reader, 10)

    assert first.seqs == [1, 2, 3, 4]
    assert received.seqs == list(range(5, last_seq + 1)) == [5, 6, 7, 8]
    check_frames(received, generation_id)
    assert received.closed_by_server


async def test_resuming_at_or_after_the_terminal_event_answers_204(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]
        by_header = await status_of(client, generation_id, headers={"Last-Event-ID": str(last_seq)})
        by_query = await status_of(client, generation_id, params={"after": last_seq})
        beyond = await status_of(client, generation_id, params={"after": last_seq + 5})
        before_terminal = await read_stream(client, generation_id, params={"after": last_seq - 1})
    assert by_header[0] == 204
    assert by_header[2] == b""
    assert by_query[0] == 204
    assert by_query[2] == b""
    assert beyond[0] == 204
    assert before_terminal.seqs == [last_seq]
    assert before_terminal.closed_by_server


# --- bad resume points -----------------------------------------------------------------------


async def test_malformed_resume_points_answer_400_with_a_json_body(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        await append(pool, generation_id, STARTED, delta(1))  # running, last seq 3
        answers = {
            "Last-Event-ID: abc": await status_of(
                client, generation_id, headers={"Last-Event-ID": "abc"}
            ),
            "Last-Event-ID: -1": await status_of(
                client, generation_id, headers={"Last-Event-ID": "-1"}
            ),
            "?after=-3": await status_of(client, generation_id, params={"after": "-3"}),
            "?after=1.5": await status_of(client, generation_id, params={"after": "1.5"}),
            "?after=abc": await status_of(client, generation_id, params={"after": "abc"}),
            "beyond the last seq": await status_of(
                client, generation_id, headers={"Last-Event-ID": "4"}
            ),
            "?after beyond the last seq": await status_of(
                client, generation_id, params={"after": "40"}
            ),
            "Last-Event-ID past bigint": await status_of(
                client, generation_id, headers={"Last-Event-ID": str(2**63)}
            ),
            "?after with 5000 digits": await status_of(
                client, generation_id, params={"after": "9" * 5000}
            ),
            "Last-Event-ID with a newline": await status_of(
                client, generation_id, params={"after": "1\n2"}
            ),
            # The header wins, but a wrong ?after= beside it is still a mistake.
            "?after=abc beside a good Last-Event-ID": await status_of(
                client, generation_id, headers={"Last-Event-ID": "1"}, params={"after": "abc"}
            ),
            # Without pace=recorded speed is unused, but still checked.
            "?speed=1000 at the live pace": await status_of(
                client, generation_id, params={"speed": "1000"}
            ),
        }
    for case, (status, headers, body) in answers.items():
        assert status == 400, f"{case}: {status} {body!r}"
        assert headers["content-type"].startswith("application/"), case
        problem = json.loads(body)
        assert problem["status"] == 400, case
        assert isinstance(problem["detail"], str), case
        assert problem["detail"], case


# --- headers and keepalive -------------------------------------------------------------------


async def test_stream_response_has_the_sse_headers(running: RunningApp, api_key: str) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        await wait_for_status(client, generation_id)
        received = await read_stream(client, generation_id)
    assert received.headers["content-type"].partition(";")[0].strip() == "text/event-stream"
    assert received.headers["cache-control"] == "no-cache"
    assert received.headers["x-accel-buffering"] == "no"


async def test_an_idle_stream_gets_keepalive_comment_lines(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    async with (
        app_factory(keepalive_s=0.3, worker_concurrency=0) as running,
        running.client(api_key) as client,
    ):
        generation_id = (await create_via_api(client))["id"]
        lines: list[str] = []
        async with (
            asyncio.timeout(10),
            client.stream("GET", stream_url(generation_id)) as response,
        ):
            assert response.status_code == 200
            appended = False
            async for line in response.aiter_lines():
                lines.append(line)
                if not appended and lines.count(": keepalive") == 2:
                    # A keepalive does not disturb the stream: a new event still follows it.
                    await append(pool, generation_id, STARTED)
                    appended = True
                if line == "id: 2":
                    break

    assert lines[:2] == [f"retry: {SSE_RETRY_MS}", ""]
    assert lines[2] == "id: 1"
    assert lines[3] == "event: generation.queued"
    assert lines[4].startswith("data: {")
    first = lines.index(": keepalive")
    assert first > 4
    assert lines[first + 1] == "", "a keepalive must be a bare comment, not an event"
    assert lines[-1] == "id: 2"
    for index, line in enumerate(lines):  # no frame carries data but a real event
        if line.startswith("data:"):
            assert lines[index - 2].startswith("id: "), lines[index - 2 : index + 1]


# --- listener loss ---------------------------------------------------------------------------

LISTENER_PIDS = """
SELECT pid
FROM pg_stat_activity
WHERE datname = current_database()
  AND pid <> pg_backend_pid()
  AND backend_type = 'client backend'
  AND query ILIKE 'LISTEN %'
"""


async def listener_pid(pool: Pool, *, other_than: int | None = None) -> int:
    """The backend of the server's LISTEN connection (a new one when ``other_than`` is set)."""
    async with asyncio.timeout(5):
        while True:
            async with pool.acquire() as conn:
                pids: list[int] = [row["pid"] for row in await conn.fetch(LISTENER_PIDS)]
            pids = [pid for pid in pids if pid != other_than]
            if len(pids) == 1:
                return pids[0]
            assert len(pids) < 2, f"expected one LISTEN backend, found {pids}"
            await asyncio.sleep(0.02)


async def terminate(pool: Pool, pid: int) -> None:
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)


async def test_streams_survive_the_listen_connection_being_killed(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    # keepalive_s stays at 15 s: only a wake-up can deliver within the bounds below.
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        old_pid = await listener_pid(pool)
        received = Received(0, httpx.Headers())
        reader = asyncio.create_task(
            read_stream(client, generation_id, received=received, timeout=20)
        )
        await wait_for_frames(received, 1, 5)
        last_seq = await append(pool, generation_id, STARTED)
        await wait_for_frames(received, last_seq, 2)

        # Kill the listener while a writer keeps appending.
        async def writer() -> int:
            seq = 0
            for n in range(40):
                seq = await append(pool, generation_id, delta(n))
                await asyncio.sleep(0.01)
            return seq

        writing = asyncio.create_task(writer())
        await asyncio.sleep(0.1)
        await terminate(pool, old_pid)
        last_seq = await writing
        new_pid = await listener_pid(pool, other_than=old_pid)
        assert new_pid != old_pid
        await wait_for_frames(received, last_seq, 2)

        # Killed again with the log quiet: what is appended while nobody listens still arrives
        # (the reconnect wakes every stream), with no further append to trigger it.
        await terminate(pool, new_pid)
        last_seq = await append(pool, generation_id, delta(100), delta(101))
        newest_pid = await listener_pid(pool, other_than=new_pid)
        await wait_for_frames(received, last_seq, 2)

        # Reconnected: new events arrive promptly again.
        assert await listener_pid(pool) == newest_pid
        started = time.monotonic()
        last_seq = await append(pool, generation_id, delta(200))
        await wait_for_frames(received, last_seq, 2)
        assert time.monotonic() - started < 2
        last_seq = await append(pool, generation_id, SUCCEEDED)
        await asyncio.wait_for(reader, 5)

    assert received.seqs == list(range(1, last_seq + 1))
    check_frames(received, generation_id)
    assert received.closed_by_server


# --- fan-out ---------------------------------------------------------------------------------


async def test_many_concurrent_streams_on_one_generation_each_get_the_full_sequence(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    streams = 20
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        all_received = [Received(0, httpx.Headers()) for _ in range(streams)]
        readers = [
            asyncio.create_task(read_stream(client, generation_id, received=received, timeout=20))
            for received in all_received
        ]
        for received in all_received:
            await wait_for_frames(received, 1, 10)
        await append(pool, generation_id, STARTED)
        for batch in range(10):
            await append(pool, generation_id, *(delta(batch * 10 + i) for i in range(5)))
            await asyncio.sleep(0.01)
        last_seq = await append(pool, generation_id, SUCCEEDED)
        await asyncio.wait_for(asyncio.gather(*readers), 15)

    assert last_seq == 53
    for received in all_received:
        assert received.seqs == list(range(1, last_seq + 1))
        assert received.closed_by_server
    check_frames(all_received[0], generation_id)


async def test_many_concurrent_streams_follow_a_real_run(
    app_factory: AppFactory, api_key: str
) -> None:
    async with (
        app_factory(offline_delay_s=0.002) as running,
        running.client(api_key) as client,
    ):
        generation_id = (await create_via_api(client))["id"]
        results = await asyncio.wait_for(
            asyncio.gather(*(read_stream(client, generation_id, timeout=20) for _ in range(20))),
            25,
        )
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]
    for received in results:
        assert received.seqs == list(range(1, last_seq + 1))
        assert received.closed_by_server


# --- stream token ----------------------------------------------------------------------------


async def test_the_stream_token_opens_the_stream_without_an_authorization_header(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as owner:
        created = await create_via_api(owner)
        other = await create_via_api(owner)
        last_seq = (await wait_for_status(owner, created["id"]))["last_seq"]
    async with running.client() as anonymous:
        assert "authorization" not in anonymous.headers
        received = await read_stream(
            anonymous, created["id"], params={"token": created["stream_token"]}
        )
        no_credentials = await status_of(anonymous, created["id"])
        wrong_generation = await status_of(
            anonymous, other["id"], params={"token": created["stream_token"]}
        )
    assert received.seqs == list(range(1, last_seq + 1))
    check_frames(received, created["id"])
    assert received.closed_by_server
    assert no_credentials[0] == 401
    assert wrong_generation[0] == 401


async def test_an_event_committed_right_after_an_opening_streams_head_read_arrives_at_once(
    app_factory: AppFactory, api_key: str, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream opening at the head may start following without reading the log, unless the
    run's notification arrived since just before its head was read (``Hub.quiet_mark``). One
    that arrived in between must be read, not left for the lost wake-up check (an hour here)."""
    async with (
        app_factory(worker_concurrency=0, wakeup_check_s=3600) as running,
        running.client(api_key) as client,
    ):
        created = await create_via_api(client)
        generation_id = created["id"]
        head = await append(pool, generation_id, STARTED)
        hub = running.app.state.services.streams.hub
        read_head = keys.live_key_and_head

        async def then_an_append_is_heard(*args: Any) -> Any:
            found = await read_head(*args)
            heard = hub.quiet_mark(UUID(generation_id))
            await append(pool, generation_id, delta(1))
            await wait_until(lambda: hub.quiet_mark(UUID(generation_id)) != heard, "heard")
            return found

        monkeypatch.setattr(keys, "live_key_and_head", then_an_append_is_heard)
        async with running.client() as anonymous:
            received = await asyncio.wait_for(
                read_stream(
                    anonymous,
                    generation_id,
                    params={"token": created["stream_token"], "after": head},
                    stop_after=1,
                ),
                5,
            )
    assert received.seqs == [head + 1]


async def test_a_fresh_stream_token_reopens_a_generation_of_the_callers_only(
    running: RunningApp, api_key: str, make_key: KeyFactory
) -> None:
    async with running.client(api_key) as owner:
        created = await create_via_api(owner)
        last_seq = (await wait_for_status(owner, created["id"]))["last_seq"]
        response = await owner.post(f"/api/generations/{created['id']}/stream-token")
        unknown = await owner.post(f"/api/generations/{uuid4()}/stream-token")
    async with running.client(await make_key("mallory")) as stranger:
        refused = await stranger.post(f"/api/generations/{created['id']}/stream-token")
    async with running.client() as anonymous:
        unauthenticated = await anonymous.post(f"/api/generations/{created['id']}/stream-token")
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["stream_url"] == f"/api/generations/{created['id']}/stream"
        assert body["expires_in"] > 0
        received = await read_stream(
            anonymous, created["id"], params={"token": body["stream_token"]}
        )
    assert received.seqs == list(range(1, last_seq + 1))
    assert unknown.status_code == 404
    assert refused.status_code == 404
    assert unauthenticated.status_code == 401


# --- snapshot + tail -------------------------------------------------------------------------


async def test_a_snapshot_of_a_finished_run_is_one_frame_then_the_end(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]
        received = await read_stream(client, generation_id, params={"snapshot": 1})
        page = (await client.get(f"/api/generations/{generation_id}/events?snapshot=1")).json()
        stored = await events_via_api(client, generation_id)
        after_it = await status_of(
            client,
            generation_id,
            params={"snapshot": 1},
            headers={"Last-Event-ID": received.frames[0].id},
        )

    assert received.first_is_retry
    assert received.closed_by_server
    (frame,) = received.frames
    assert (frame.event, frame.id) == ("snapshot", str(last_seq))
    assert "\n" not in frame.data
    snapshot = json.loads(frame.data)
    assert snapshot == page["snapshot"], "the stream and the events page send the same state"
    assert (page["events"], page["next_after"], page["has_more"]) == ([], last_seq, False)
    assert snapshot["seq"] == last_seq
    assert snapshot["last_event"] == stored[-1]
    assert snapshot["chain"] == stored[-1]["chain"]
    assert (snapshot["status"], snapshot["generation_id"]) == ("succeeded", generation_id)
    assert sum(snapshot["counts"].values()) == last_seq
    assert after_it[0] == 204, "a reconnect after a final snapshot is told the stream is over"


async def test_a_snapshot_of_a_live_run_continues_with_the_events_after_it(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    """No seam: the first event after the snapshot is its seq + 1 and follows its chain."""
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        await append(pool, generation_id, STARTED, *[delta(n) for n in range(5)])
        received = Received(0, httpx.Headers())
        reader = asyncio.create_task(
            read_stream(client, generation_id, params={"snapshot": 1}, received=received)
        )
        await wait_for_frames(received, 1, 10)
        await append(pool, generation_id, delta(5))
        last_seq = await append(pool, generation_id, delta(6), SUCCEEDED)
        await reader
        stored = await events_via_api(client, generation_id)

    snapshot, *tail = received.frames
    assert (snapshot.event, snapshot.id) == ("snapshot", "7")
    state = json.loads(snapshot.data)
    assert state["counts"] == {"generation.queued": 1, "generation.started": 1, "llm.delta": 5}
    assert state["status"] == "running"
    assert state["last_event"] == stored[6]
    assert [int(frame.id) for frame in tail] == list(range(8, last_seq + 1))
    check_frames(Received(200, httpx.Headers(), frames=tail), generation_id)
    chain = state["chain"]
    for frame in tail:
        chain = chain_after(chain, frame.data)
        assert json.loads(frame.data)["chain"] == chain
    assert [json.loads(frame.data) for frame in tail] == stored[7:]


async def test_a_snapshot_marks_where_a_run_restarted_waited_and_was_retried(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    """A run restarted, then retried through the API: its snapshot's marks are those events,
    their own seq, type, timestamp, stage and data, the same on the stream and the page."""

    def core_started(attempt: int) -> NewEvent:
        data = {"phase": "core", "number": 1, "of": 4, "attempt": attempt, "provider": "offline"}
        return NewEvent(EventType.PHASE_STARTED, "core", 0.1, "Core", {**data, "model": None})

    waiting = NewEvent(
        EventType.LLM_WAITING,
        "core",
        0.1,
        "Waiting",
        {"phase": "core", "attempt": 1, "waited_s": 5},
    )
    failed = NewEvent(EventType.FAILED, "core", 0.2, "Failed", {"error": "boom"})
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        await append(
            pool, generation_id, STARTED, core_started(1), waiting, core_started(2), failed
        )
        assert (await client.post(f"/api/generations/{generation_id}/retry")).status_code == 202
        await append(pool, generation_id, STARTED, core_started(1), SUCCEEDED)
        received = await read_stream(client, generation_id, params={"snapshot": 1})
        page = (await client.get(f"/api/generations/{generation_id}/events?snapshot=1")).json()
        stored = await events_via_api(client, generation_id)

    (frame,) = received.frames
    snapshot = json.loads(frame.data)
    assert snapshot == page["snapshot"]
    marked = [stored[seq - 1] for seq in (4, 5, 7, 9)]
    assert [event["type"] for event in marked] == [
        "llm.waiting", "phase.started", "generation.retried", "phase.started"
    ]  # fmt: skip
    keys = ("seq", "type", "timestamp", "stage", "data")
    assert snapshot["marks"] == [{key: event[key] for key in keys} for event in marked]
    assert snapshot["marks_dropped"] == 0
    (core,) = snapshot["phases"]
    assert core["starts"] == 3
    assert core["first_started_at"] == stored[2]["timestamp"]
    assert core["started_at"] == stored[8]["timestamp"]


async def test_a_stream_resumed_with_snapshot_sends_no_snapshot(
    running: RunningApp, api_key: str
) -> None:
    """EventSource reconnects to the same URL: with a resume point the client has its state."""
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        last_seq = (await wait_for_status(client, generation_id))["last_seq"]
        resumed = await read_stream(
            client, generation_id, params={"snapshot": 1}, headers={"Last-Event-ID": "3"}
        )
        page = (
            await client.get(f"/api/generations/{generation_id}/events?snapshot=1&after=3")
        ).json()
    assert resumed.seqs == list(range(4, last_seq + 1))
    assert "snapshot" not in page
    assert page["events"][0]["seq"] == 4


@pytest.mark.parametrize(
    ("params", "detail"),
    [
        ({"snapshot": 1, "pace": "recorded"}, "snapshot=1 cannot go with pace=recorded"),
        ({"snapshot": "maybe"}, "snapshot"),
    ],
)
async def test_a_snapshot_asked_wrongly_is_a_400(
    running: RunningApp, api_key: str, params: dict[str, str | int], detail: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        await wait_for_status(client, generation_id)
        status, _, body = await status_of(client, generation_id, params=params)
    assert status == 400
    assert detail in body.decode()


# --- a retried run ----------------------------------------------------------------------------


async def test_a_retried_runs_stream_goes_on_past_its_first_terminal_event(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    """A stream ends at a terminal event that is the log's last; once the run is retried, a
    reconnect after it is a 200 with the rest, and a stream from the start sends both
    attempts and ends at the second attempt's end."""
    failed = NewEvent(EventType.FAILED, "core", 0.2, "Failed", {"error": "boom"})
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        generation_id = (await create_via_api(client))["id"]
        ended_at = await append(pool, generation_id, STARTED, failed)
        first = await read_stream(client, generation_id)
        before_retry = await status_of(
            client, generation_id, headers={"Last-Event-ID": str(ended_at)}
        )
        assert (await client.post(f"/api/generations/{generation_id}/retry")).status_code == 202
        last_seq = await append(pool, generation_id, STARTED, SUCCEEDED)
        rest = await read_stream(client, generation_id, headers={"Last-Event-ID": str(ended_at)})
        whole = await read_stream(client, generation_id)
        stored = await events_via_api(client, generation_id)

    assert first.seqs == [1, 2, 3]
    assert first.closed_by_server
    assert before_retry[0] == 204
    assert rest.seqs == list(range(ended_at + 1, last_seq + 1))
    assert rest.frames[0].event == "generation.retried"
    assert whole.seqs == list(range(1, last_seq + 1))
    assert whole.events == stored
    assert whole.closed_by_server


# --- replay at the recorded pace --------------------------------------------------------------


async def recorded_generation(pool: Pool, gaps_s: list[float]) -> UUID:
    """A finished generation of alice's whose events were appended ``gaps_s`` apart."""
    generation_id = uuid4()
    async with pool.acquire() as conn:
        await generations.insert_generation(
            conn, generation_id, "alice", SPEC, "offline", None, queued_event()
        )
        for n, gap in enumerate(gaps_s):
            await asyncio.sleep(gap)
            await event_log.append(
                conn, generation_id, [NewEvent(EventType.LLM_DELTA, "models", 0.5, f"{n}")]
            )
        await event_log.append(
            conn, generation_id, [NewEvent(EventType.SUCCEEDED, "done", 1.0, "Done")]
        )
    return generation_id


async def arrival_times(
    client: httpx.AsyncClient, generation_id: UUID, params: Mapping[str, str | int]
) -> list[tuple[int, float]]:
    arrivals: list[tuple[int, float]] = []
    async with (
        asyncio.timeout(20),
        aconnect_sse(client, "GET", stream_url(str(generation_id)), params=dict(params)) as source,
    ):
        assert source.response.status_code == 200, (await source.response.aread()).decode()
        async for sse in source.aiter_sse():
            if sse.data:
                arrivals.append((int(sse.id), time.monotonic()))
    return arrivals


async def test_a_finished_generation_replays_at_its_recorded_pace_with_a_speed_factor(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    generation_id = await recorded_generation(pool, [0.6, 0.6])  # seqs 2 and 3, 0.6 s apart
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        paced = await arrival_times(client, generation_id, {"pace": "recorded", "speed": 2})
        live = await arrival_times(client, generation_id, {})
    assert [seq for seq, _ in paced] == [seq for seq, _ in live] == [1, 2, 3, 4]
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(paced)]
    assert gaps[0] > 0.2  # 0.6 s recorded, at twice the speed: ~0.3 s
    assert gaps[1] > 0.2
    assert gaps[2] < gaps[1]  # the terminal event was recorded right after seq 3
    assert live[-1][1] - live[0][1] < (paced[-1][1] - paced[0][1]) / 2  # without pace: at once


async def test_replay_cuts_long_pauses_and_resumes_after_last_event_id(
    app_factory: AppFactory, api_key: str, pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pacing, "REPLAY_GAP_MAX_S", 0.1)
    generation_id = await recorded_generation(pool, [0.8])
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        paced = await arrival_times(client, generation_id, {"pace": "recorded"})
        resumed = await arrival_times(client, generation_id, {"pace": "recorded", "after": 1})
    assert [seq for seq, _ in paced] == [1, 2, 3]
    assert paced[1][1] - paced[0][1] < 0.5  # 0.8 s recorded, cut to 0.1 s
    assert [seq for seq, _ in resumed] == [2, 3]


async def test_replay_refuses_a_running_generation_and_a_bad_speed(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    running_id = uuid4()
    async with pool.acquire() as conn:
        await generations.insert_generation(
            conn, running_id, "alice", SPEC, "offline", None, queued_event()
        )
    finished_id = await recorded_generation(pool, [])
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        not_finished = await status_of(client, str(running_id), params={"pace": "recorded"})
        too_fast = await status_of(
            client, str(finished_id), params={"pace": "recorded", "speed": 1000}
        )
        zero = await status_of(client, str(finished_id), params={"pace": "recorded", "speed": 0})
        too_slow = await status_of(
            client, str(finished_id), params={"pace": "recorded", "speed": "1e-300"}
        )
        slowest = await status_of(
            client,
            str(finished_id),
            params={"pace": "recorded", "speed": str(pacing.REPLAY_SPEED_MIN)},
        )
        unknown_pace = await status_of(client, str(finished_id), params={"pace": "fast"})
    assert not_finished[0] == 409
    assert b"finished" in not_finished[2]
    assert too_fast[0] == zero[0] == too_slow[0] == unknown_pace[0] == 400
    assert b"speed" in too_slow[2]
    assert slowest[0] == 200


async def test_a_long_replay_pause_is_filled_with_keepalives(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    """?pace=recorded&speed=0.01 pauses up to 200 s between two events: the stream still
    sends a line at least every keepalive interval."""
    generation_id = await recorded_generation(pool, [])  # seq 1 queued, seq 2 succeeded
    async with pool.acquire() as conn:  # recorded a second apart, without waiting a second
        await conn.execute(
            "UPDATE generation_events SET created_at = created_at + interval '1 second'"
            " WHERE generation_id = $1 AND seq = 2",
            generation_id,
        )
    lines: list[tuple[float, str]] = []
    async with (
        app_factory(worker_concurrency=0, keepalive_s=0.1) as running,
        running.client(api_key) as client,
        asyncio.timeout(10),
        client.stream(
            "GET", stream_url(str(generation_id)), params={"pace": "recorded", "speed": 1}
        ) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line:
                lines.append((time.monotonic(), line))
    texts = [text for _, text in lines]
    between = texts[texts.index("id: 1") : texts.index("id: 2")]
    assert between.count(": keepalive") >= 5, texts  # ~1 s at 80-100 % of 0.1 s each
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(lines)]
    assert max(gaps) < 0.5, gaps  # never the whole second in silence


async def test_beyond_the_owners_stream_quota_a_stream_is_429_and_a_closed_one_frees_its_slot(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    alice, bob = await make_key("alice"), await make_key("bob")
    async with (
        app_factory(worker_concurrency=0, owner_max_streams=2) as running,
        running.client(alice) as client,
        running.client(bob) as other,
    ):
        url = stream_url((await create_via_api(client))["id"])
        bobs_url = stream_url((await create_via_api(other))["id"])
        async with contextlib.AsyncExitStack() as held:
            for _ in range(2):
                opened = await held.enter_async_context(client.stream("GET", url))
                assert opened.status_code == 200
            refused = await client.get(url)
            bobs = await held.enter_async_context(other.stream("GET", bobs_url))
            assert bobs.status_code == 200  # another owner's quota is its own
        # Both of alice's streams are closed now: their slots come back once the server sees it.

        async def reopened() -> int | None:
            async with client.stream("GET", url) as response:
                return response.status_code if response.status_code == 200 else None

        assert await wait_until(reopened, "a stream opens again", seconds=10) == 200

    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "alice has 2 streams open" in refused.json()["detail"]


async def test_a_stream_closed_at_a_write_closes_the_generators_inside_it_there_and_then() -> None:
    """A client gone while a write waits ends the stream at its outermost generator; those
    inside it (the frames, the follower with its subscription) end with it, in its task and
    its log context, not later when the collector finds them."""
    ended: list[str] = []

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            yield b"one"
            yield b"two"
        finally:
            ended.append("frames")

    body = HoldingSlot(frames(), _slots_telling(ended), "alice")
    assert await anext(body) == b"one"
    await body.aclose()
    assert ended == ["frames", "slot of alice"]


def _slots_telling(ended: list[str]) -> StreamSlots:
    class Slots(StreamSlots):
        def give_back(self, owner: str) -> None:
            ended.append(f"slot of {owner}")

    return Slots()


@pytest.mark.parametrize("end", ["run out", "failed", "closed unstarted", "dropped unstarted"])
async def test_a_streams_slot_is_given_back_once_however_its_body_ends(end: str) -> None:
    """A response whose start failed never starts its body: a generator's ``finally`` would
    not run, and the owner would have lost a slot until the process restarts."""
    ended: list[str] = []

    async def frames() -> AsyncGenerator[bytes, None]:
        yield b"one"
        if end == "failed":
            raise RuntimeError("the database went away")

    body: HoldingSlot | None = HoldingSlot(frames(), _slots_telling(ended), "alice")
    assert body is not None
    if end in ("run out", "failed"):
        with contextlib.suppress(RuntimeError):
            assert [chunk async for chunk in body] == [b"one"]
        await body.aclose()
    elif end == "closed unstarted":
        await body.aclose()
    body = None  # dropped: freed at once (no cycle holds it)
    assert ended == ["slot of alice"]
