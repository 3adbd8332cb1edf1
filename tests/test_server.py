"""``server.py``: what a serving process needs from the operating system, and logs with no
secret in them (the redaction itself: tests/observe/test_logs.py). How ``serve`` and
``worker`` start, stop and hand over runs is tested on real processes in test_processes.py and
test_faults.py; what a connection may cost, in test_connections.py."""

from __future__ import annotations

import json
import resource
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.server import raise_open_file_limit
from tests.conftest import SpawnServe
from tests.helpers import API, SMALL_SPEC, create_via_api, wait_until
from tests.processes import free_port, spawn_service, terminate


@pytest.fixture
def file_limits() -> Iterator[tuple[int, int]]:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    yield limits
    resource.setrlimit(resource.RLIMIT_NOFILE, limits)


def test_the_open_file_limit_rises_to_the_hard_limit(file_limits: tuple[int, int]) -> None:
    _, hard = file_limits
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    soft = raise_open_file_limit()

    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft == (hard if hard != resource.RLIM_INFINITY else 1 << 20)


async def test_serve_logs_no_stream_token_and_no_api_key(
    spawn_serve: SpawnServe, api_key: str
) -> None:
    process = await spawn_serve()
    async with process.client(api_key) as client:
        created = await create_via_api(client, SMALL_SPEC)
        stream = f"{API}/{created['id']}/stream"
        token = created["stream_token"]
        async with client.stream("GET", stream, params={"token": token}) as response:
            assert response.status_code == 200
        async with httpx.AsyncClient(base_url=process.base_url) as anonymous:
            refused = await anonymous.get(stream, params={"token": api_key})
            assert refused.status_code == 401
            assert (await anonymous.get(API, params={"api_key": api_key})).status_code == 401
        assert (await client.get(f"{API}/{api_key}")).status_code == 404

    def access_lines() -> list[str] | None:
        lines = [line for line in process.log().splitlines() if f"{API}" in line]
        return lines if len(lines) >= 5 else None

    lines = await wait_until(access_lines, "the access log of the five requests")
    await terminate(process.proc)

    log = process.log()
    assert token not in log
    assert token.split(".")[1] not in log
    assert api_key not in log
    assert api_key.removeprefix("gsk_") not in log
    assert sum("token=***" in line for line in lines) == 2
    assert any("api_key=***" in line for line in lines)
    assert any(f"{API}/gsk_***" in line for line in lines)


async def test_a_full_run_logs_json_lines_that_name_it_and_carry_no_secret(
    spawn_serve: SpawnServe, api_key: str, database_url: str, tmp_path: Path
) -> None:
    """``serve`` and a ``worker`` logging JSON; the worker's metrics scraped with no key from
    its private address. Every line parses, the run's lines name it, the request's line
    carries the caller's request id, and neither log holds the key or the stream token."""
    metrics_port = free_port()
    worker = spawn_service(
        "worker",
        "worker",
        tmp_path,
        {
            "DATABASE_URL": database_url,
            "GENSTREAM_LOG_FORMAT": "json",
            "GENSTREAM_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
            "GENSTREAM_OFFLINE_DELAY_S": "0",
            "GENSTREAM_WORKER_CONCURRENCY": "1",
        },
    )
    try:
        serve = await spawn_serve(log_format="json")
        async with serve.client(api_key) as client:
            response = await client.post(
                API, json={"spec": SMALL_SPEC}, headers={"X-Request-ID": "edge-7f3a"}
            )
            assert response.status_code == 201, response.text
            assert response.headers["X-Request-ID"] == "edge-7f3a"
            created = response.json()
            token = created["stream_token"]
            stream = f"{API}/{created['id']}/stream"
            async with client.stream(
                "GET", stream, params={"token": token}, headers={"X-Request-ID": "edge-51e7"}
            ) as streamed:
                body = (await streamed.aread()).decode()
            assert "event: generation.succeeded" in body

        async def scraped() -> str | None:
            async with httpx.AsyncClient() as scraper:
                try:
                    text = (await scraper.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                except httpx.TransportError:
                    return None
            finished = 'genstream_runs_finished_total{outcome="succeeded"} 1.0'
            return text if finished in text else None

        metrics_text = await wait_until(scraped, "the worker's metrics with the finished run")
        assert "genstream_claims_total 1.0" in metrics_text
        assert "genstream_runs_active 0.0" in metrics_text
    finally:
        await terminate(worker.proc)
    await terminate(serve.proc)

    lines = {
        process.name: [json.loads(line) for line in process.log().splitlines() if line.strip()]
        for process in (serve, worker)
    }
    run_lines = [line for line in lines["worker"] if line.get("generation_id") == created["id"]]
    events = [line["event"] for line in run_lines]
    assert events[0] == "run.claimed"
    assert events.count("phase.completed") == 4
    assert events[-1] == "run.finished"
    assert all((line["attempt"], line["owner"]) == (1, "alice") for line in run_lines)
    assert run_lines[-1]["outcome"] == "succeeded"
    assert run_lines[-1]["duration_s"] > 0
    requests = [line for line in lines["serve-0"] if line["event"] == "request"]
    (created_line,) = [line for line in requests if line["request_id"] == "edge-7f3a"]
    assert (created_line["route"], created_line["status"]) == (API, 201)
    # The stream's body is written after its request's handling returned; its log line still
    # names the request.
    (closed,) = [line for line in lines["serve-0"] if line["event"] == "stream.closed"]
    assert (closed["reason"], closed["request_id"]) == ("terminal", "edge-51e7")
    for process in (serve, worker):
        log = process.log()
        assert api_key not in log
        assert api_key.removeprefix("gsk_") not in log
        assert token not in log
        assert token.split(".")[-1] not in log
