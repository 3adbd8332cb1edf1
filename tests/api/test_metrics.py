"""``GET /metrics``: who may read it, and that a generation and its stream move each counter
by what they did (read back from the events the stream delivered), not merely that the
names exist."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families

from service.events import EventType
from tests.conftest import AppFactory, KeyFactory
from tests.helpers import API, SMALL_SPEC, create_via_api, wait_for_status, wait_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse(response.text)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def stream_all(client: httpx.AsyncClient, generation_id: str, token: str) -> list[Any]:
    frames = []
    async with aconnect_sse(
        client, "GET", f"{API}/{generation_id}/stream", params={"token": token}
    ) as source:
        async for sse in source.aiter_sse():
            if sse.data:
                frames.append(json.loads(sse.data))
    return frames


async def test_a_generation_and_its_stream_move_each_counter_by_what_they_did(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    admin, alice = await make_key("ops", is_admin=True), await make_key("alice")
    async with (
        app_factory(worker_concurrency=1, offline_delay_s=0.002) as running,
        running.client(admin) as ops,
        running.client(alice) as client,
    ):
        before = await scrape(ops)
        created = await create_via_api(client, SMALL_SPEC)
        events = await asyncio.wait_for(
            stream_all(client, created["id"], created["stream_token"]), 60
        )
        await wait_for_status(client, created["id"], "succeeded")

        async def stream_counted() -> Samples | None:
            after = await scrape(ops)
            closed = moved(before, after, "genstream_streams_closed_total", reason="terminal")
            return after if closed else None

        after = await wait_until(stream_counted, "the stream's end in the metrics")

    assert events[-1]["type"] == EventType.SUCCEEDED
    by_type = Counter(event["type"] for event in events)
    for event_type, count in by_type.items():
        assert moved(before, after, "genstream_events_appended_total", type=event_type) == count
    # A phase's files and its phase.completed are one append; every other event is its own.
    appends = len(events) - by_type[EventType.FILE_SAVED]
    assert moved(before, after, "genstream_notifies_sent_total") == appends
    assert moved(before, after, "genstream_append_duration_seconds_count") == appends
    assert moved(before, after, "genstream_append_retries_total", cause="unavailable") == 0

    assert moved(before, after, "genstream_streams_opened_total") == 1
    assert moved(before, after, "genstream_frames_sent_total") == len(events)
    assert value(after, "genstream_streams_open") == 0
    delivered = moved(before, after, "genstream_delivery_lag_seconds_count")
    assert 1 <= delivered <= len(events)  # those appended after the stream opened
    assert moved(before, after, "genstream_delivery_lag_seconds_sum") < delivered * 5.0
    # The stream path's share, from each commit's notification: writes at the live edge.
    written = moved(before, after, "genstream_stream_write_lag_seconds_count")
    assert 1 <= written <= delivered
    assert moved(before, after, "genstream_stream_write_lag_seconds_sum") < written * 1.0

    assert moved(before, after, "genstream_claims_total") == 1
    assert moved(before, after, "genstream_resumes_total") == 0
    assert moved(before, after, "genstream_runs_finished_total", outcome="succeeded") == 1
    run_count = "genstream_run_duration_seconds_count"
    assert moved(before, after, run_count, outcome="succeeded") == 1
    assert moved(before, after, "genstream_queue_wait_seconds_count") == 1
    completed = [event for event in events if event["type"] == EventType.PHASE_COMPLETED]
    for phase in completed:
        name = "genstream_phase_duration_seconds_count"
        assert moved(before, after, name, phase=phase["data"]["phase"]) == 1

    provider, model = completed[0]["data"]["provider"], completed[0]["data"]["model"] or ""
    model_labels = {"provider": provider, "model": model}
    calls = moved(before, after, "genstream_model_calls_total", **model_labels, outcome="ok")
    assert calls == len(completed)
    tokens_in = sum(phase["data"]["prompt_tokens"] for phase in completed)
    tokens_out = sum(phase["data"]["output_tokens"] for phase in completed)
    assert tokens_out > 0
    assert moved(before, after, "genstream_model_tokens_total", **model_labels, direction="in") == (
        tokens_in
    )
    out = moved(before, after, "genstream_model_tokens_total", **model_labels, direction="out")
    assert out == tokens_out
    first_token = moved(before, after, "genstream_model_first_token_seconds_count", **model_labels)
    assert first_token == len(completed)

    created_route = {"method": "POST", "route": "/api/generations", "status": "201"}
    assert moved(before, after, "genstream_http_requests_total", **created_route) == 1
    assert value(after, "genstream_db_up") == 1
    assert (
        value(after, "genstream_db_pool_max_connections")
        == running.app.state.services.settings.pool_max_size
    )
    assert value(after, "genstream_db_pool_connections", state="in_use") >= 0
    assert value(after, "genstream_queue_depth", owner_class="standard") == 0
    assert ("process_cpu_seconds_total", ()) in after


async def test_a_client_that_goes_away_and_one_over_its_quota_are_counted_by_reason(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    admin, alice = await make_key("ops", is_admin=True), await make_key("alice")
    async with (
        app_factory(worker_concurrency=0, owner_max_streams=1) as running,
        running.client(admin) as ops,
        running.client(alice) as client,
    ):
        created = await create_via_api(client, SMALL_SPEC)
        stream = f"{API}/{created['id']}/stream"
        before = await scrape(ops)
        async with client.stream("GET", stream) as held:
            assert held.status_code == 200
            lines = held.aiter_lines()
            while "generation.queued" not in await anext(lines):
                pass
            refused = await client.get(stream)
            assert refused.status_code == 429
            open_now = await scrape(ops)
            assert value(open_now, "genstream_streams_open") == 1

        async def gone() -> Samples | None:
            after = await scrape(ops)
            closed = moved(before, after, "genstream_streams_closed_total", reason="client_gone")
            return after if closed == 1 else None

        after = await wait_until(gone, "the dropped stream in the metrics")
    assert moved(before, after, "genstream_streams_refused_total", reason="quota") == 1
    assert value(after, "genstream_streams_open") == 0
    assert moved(before, after, "genstream_keepalives_sent_total") == 0


async def test_metrics_are_for_admin_keys(app_factory: AppFactory, make_key: KeyFactory) -> None:
    async with app_factory(worker_concurrency=0) as running:
        async with running.client() as anonymous:
            assert (await anonymous.get("/metrics")).status_code == 401
        async with running.client(await make_key("alice")) as client:
            forbidden = await client.get("/metrics")
        assert forbidden.status_code == 403
        assert "admin" in forbidden.json()["detail"]


async def test_every_response_carries_a_request_id_and_a_sane_incoming_one_is_kept(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    async with app_factory(worker_concurrency=0) as running, running.client() as client:
        kept = await client.get("/healthz", headers={"X-Request-ID": "edge-42.a"})
        made = await client.get("/healthz")
        hostile = await client.get("/healthz", headers={"X-Request-ID": "a b\tc" + "x" * 200})
        unknown_route = await client.get("/nowhere")
        refused = await client.get("/api/generations", params={"q": "\x00"})
    assert kept.headers["X-Request-ID"] == "edge-42.a"
    assert len(made.headers["X-Request-ID"]) == 32
    assert made.headers["X-Request-ID"] != hostile.headers["X-Request-ID"]
    assert len(hostile.headers["X-Request-ID"]) == 32
    # Responses Litestar makes outside the handlers carry one too.
    assert unknown_route.status_code == 404
    assert len(unknown_route.headers["X-Request-ID"]) == 32
    assert refused.status_code == 400
    assert len(refused.headers["X-Request-ID"]) == 32
