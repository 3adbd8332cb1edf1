"""``GET /api/stream``: every run of the caller's on one SSE connection, over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from service.store.db import Pool
from tests.conftest import AppFactory, KeyFactory, RunningApp, free_socket
from tests.helpers import (
    DONE,
    STARTED,
    append,
    create_via_api,
    delta,
    events_via_api,
    wait_until,
)

TERMINAL = {"generation.succeeded", "generation.failed", "generation.cancelled"}


async def read_until(
    client: httpx.AsyncClient,
    done: set[str],
    *,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    frames: list[ServerSentEvent] | None = None,
    stop_after: int | None = None,
    timeout: float = 30.0,
) -> list[ServerSentEvent]:
    """Frames until every run in ``done`` has sent its terminal event (or ``stop_after``)."""
    frames = [] if frames is None else frames
    finished: set[str] = set()
    async with (
        asyncio.timeout(timeout),
        aconnect_sse(
            client, "GET", "/api/stream", params=params or {}, headers=dict(headers or {})
        ) as source,
    ):
        assert source.response.status_code == 200, (await source.response.aread()).decode()
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            frames.append(sse)
            body = json.loads(sse.data)
            if sse.event in TERMINAL or (
                sse.event == "snapshot" and body["last_event"]["type"] in TERMINAL
            ):
                finished.add(body["generation_id"])
            if done <= finished or (stop_after is not None and len(frames) >= stop_after):
                return frames
    return frames


def by_run(frames: list[ServerSentEvent]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for frame in frames:
        body = json.loads(frame.data)
        if frame.event == "snapshot":
            seqs[body["generation_id"]].extend(range(1, body["seq"] + 1))
        else:
            seqs[body["generation_id"]].append(body["seq"])
    return dict(seqs)


async def test_one_stream_carries_every_run_each_event_once_in_order(
    app_factory: AppFactory, api_key: str
) -> None:
    async with app_factory(offline_delay_s=0.01) as running, running.client(api_key) as client:
        ids = {(await create_via_api(client))["id"] for _ in range(3)}
        frames = await read_until(client, ids)
        logs = {run: [e["seq"] for e in await events_via_api(client, run)] for run in ids}
    assert by_run(frames) == logs


async def test_a_stream_resumed_after_a_server_restart_misses_and_repeats_nothing(
    app_factory: AppFactory, api_key: str
) -> None:
    """Cut mid-way (the server stops), resumed on a new server with the last frame's id."""
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()
    settings = {"offline_delay_s": 0.02}
    async with app_factory(port=port, **settings) as first, first.client(api_key) as client:
        ids = {(await create_via_api(client))["id"] for _ in range(4)}
        frames = await read_until(client, ids, stop_after=40)
    async with app_factory(port=port, **settings) as second, second.client(api_key) as client:
        await read_until(client, ids, headers={"Last-Event-ID": frames[-1].id}, frames=frames)
        logs = {run: [e["seq"] for e in await events_via_api(client, run)] for run in ids}
    assert by_run(frames) == logs


async def test_snapshot_1_starts_each_unfinished_run_with_its_snapshot(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        run = (await create_via_api(client))["id"]
        await append(pool, run, STARTED, delta(1), delta(2))
        received: list[ServerSentEvent] = []
        reader = asyncio.create_task(
            read_until(client, {run}, params={"snapshot": 1}, frames=received, timeout=8)
        )
        await wait_until(lambda: bool(received), "the snapshot")
        await append(pool, run, delta(3), DONE)
        await reader
        log = await events_via_api(client, run)
    snapshot, *tail = received
    assert snapshot.event == "snapshot"
    assert json.loads(snapshot.data)["seq"] == 4
    assert [json.loads(frame.data) for frame in tail] == log[4:]
    assert tail[0].id != snapshot.id  # every frame has its own cursor


async def test_a_stream_sends_its_owners_runs_only(
    app_factory: AppFactory, api_key: str, make_key: KeyFactory, pool: Pool
) -> None:
    bob_key = await make_key("bob")
    async with app_factory(worker_concurrency=0) as running:
        async with running.client(api_key) as alice:
            alices = (await create_via_api(alice))["id"]
        async with running.client(bob_key) as bob:
            bobs = (await create_via_api(bob))["id"]
            frames: list[ServerSentEvent] = []
            reader = asyncio.create_task(read_until(bob, {bobs}, frames=frames))
            await wait_until(lambda: bool(frames), "bob's unfinished run")
            await append(pool, alices, STARTED, DONE)
            await append(pool, bobs, STARTED, DONE)
            await reader
    assert by_run(frames) == {bobs: [1, 2, 3]}


async def test_a_token_from_stream_token_opens_it_and_no_other_scope_is_accepted(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    async with app_factory(worker_concurrency=0) as running:
        async with running.client(api_key) as client:
            run = (await create_via_api(client))["id"]
            issued = await client.post("/api/stream-token")
            one_run = (await client.post(f"/api/generations/{run}/stream-token")).json()
        token = issued.json()["stream_token"]
        async with running.client() as anonymous:
            frames: list[ServerSentEvent] = []
            reader = asyncio.create_task(
                read_until(anonymous, {run}, params={"token": token}, frames=frames)
            )
            await wait_until(lambda: bool(frames), "the unfinished run")
            await append(pool, run, STARTED, DONE)
            await reader
            wrong_scope = await anonymous.get(
                "/api/stream", params={"token": one_run["stream_token"]}
            )
            other_way = await anonymous.get(
                f"/api/generations/{run}/stream", params={"token": token}
            )
            no_key = await anonymous.get("/api/stream")
            key_in_url = await anonymous.get("/api/stream", params={"token": api_key})
    assert issued.status_code == 201
    assert issued.json()["stream_url"] == "/api/stream"
    assert by_run(frames) == {run: [1, 2, 3]}
    assert wrong_scope.status_code == other_way.status_code == no_key.status_code == 401
    assert "every run" in wrong_scope.json()["detail"]
    assert key_in_url.status_code == 401


@pytest.mark.parametrize(
    "cursor", ["not base64!", "AQ", "A" * 9000, "AgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"]
)
async def test_a_cursor_we_did_not_issue_is_a_400(
    running: RunningApp, api_key: str, cursor: str
) -> None:
    async with running.client(api_key) as client:
        by_header = await client.get("/api/stream", headers={"Last-Event-ID": cursor})
        by_query = await client.get("/api/stream", params={"after": cursor})
        behind_a_header = await client.get(
            "/api/stream", params={"after": cursor}, headers={"Last-Event-ID": ""}
        )
    for response in (by_header, by_query, behind_a_header):
        assert response.status_code == 400, response.text
        assert "cursor" in response.json()["detail"]
