"""Whole generations with provider "openai": the real service, the real openai SDK, a fake
OpenAI-compatible HTTP server. What the model answered is exactly what the log and files hold."""

from __future__ import annotations

import asyncio
import io
import logging
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import SecretStr

from service.events import NewFile
from service.generation.parsing import render_block
from service.generation.phases import PHASES
from tests.conftest import AppFactory, RunningApp
from tests.generation.fake_openai import Drop, Fail, FakeOpenAI, Hang, Stream
from tests.generation.model_runs import ANSWERS, of_type, run_to_end
from tests.helpers import SPEC

API_KEY = "sk-test-openai-run-key"
OPENAI = {"spec": SPEC, "provider": "openai"}
DELTA = "llm.delta"


@asynccontextmanager
async def openai_app(
    app_factory: AppFactory, **overrides: Any
) -> AsyncIterator[tuple[RunningApp, FakeOpenAI]]:
    async with FakeOpenAI() as fake:
        settings = {
            "openai_base_url": fake.api_url,
            "openai_api_key": SecretStr(API_KEY),
            "openai_backoff_s": 0.0,
            "openai_timeout_s": 5.0,
            "delta_flush_s": 0.0,
            **overrides,
        }
        async with app_factory(**settings) as running:
            yield running, fake


async def test_an_openai_run_stores_exactly_what_the_model_answered(
    app_factory: AppFactory, api_key: str
) -> None:
    async with openai_app(app_factory) as (running, fake):
        fake.script(*(Stream(ANSWERS[p.stage][1], 120, 80) for p in PHASES))
        generation_id, events = await run_to_end(running, api_key, OPENAI)
        assert events[-1]["type"] == "generation.succeeded"
        expected = [f for p in PHASES for f in ANSWERS[p.stage][0]]
        saved = of_type(events, "file.saved")
        assert [e["data"]["path"] for e in saved] == [f.path for f in expected]
        assert [e["data"]["sha256"] for e in saved] == [f.sha256 for f in expected]
        for phase in PHASES:
            deltas = [e for e in of_type(events, "llm.delta") if e["stage"] == phase.stage]
            assert "".join(e["data"]["text"] for e in deltas) == "".join(ANSWERS[phase.stage][1])
        for completed in of_type(events, "phase.completed"):
            assert completed["data"]["prompt_tokens"] == 120
            assert completed["data"]["output_tokens"] == 80
            assert completed["data"]["provider"] == "openai"
        async with running.client(api_key) as client:
            archive = await client.get(f"/api/generations/{generation_id}/archive")
        with zipfile.ZipFile(io.BytesIO(archive.content)) as unpacked:
            assert {name: unpacked.read(name).decode() for name in unpacked.namelist()} == {
                f.path: f.content for f in expected
            }
        assert len(fake.requests) == len(PHASES)
        assert all(r.body["model"] == "gpt-4o-mini" for r in fake.requests)
        assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in fake.requests)
        assert fake.requests[0].system_text
        assert "Project specification" in fake.requests[0].user_text
        assert "core/module_0.py" in fake.requests[1].user_text  # earlier files as context


async def test_a_keyless_local_server_runs_the_model_the_request_names(
    app_factory: AppFactory, api_key: str
) -> None:
    """Ollama's way: a base URL, no key, and a model per request."""
    async with openai_app(app_factory, openai_api_key=None) as (running, fake):
        fake.script(*(Stream(ANSWERS[p.stage][1], usage=False) for p in PHASES))
        _, events = await run_to_end(running, api_key, {**OPENAI, "model": "qwen2.5-coder:7b"})
    assert events[-1]["type"] == "generation.succeeded"
    assert {r.body["model"] for r in fake.requests} == {"qwen2.5-coder:7b"}
    for completed in of_type(events, "phase.completed"):
        assert (completed["data"]["prompt_tokens"], completed["data"]["output_tokens"]) == (0, 0)
        assert completed["data"]["model"] == "qwen2.5-coder:7b"


async def test_a_stream_that_drops_mid_answer_restarts_the_phase_without_mixing_files(
    app_factory: AppFactory, api_key: str
) -> None:
    broken = render_block(NewFile("models/half_written.py", "X = 1\n", "python"))
    async with openai_app(app_factory) as (running, fake):
        fake.script(
            Stream(ANSWERS["core"][1]),
            Drop([broken[:30], broken[30:]]),
            *(Stream(ANSWERS[stage][1]) for stage in ("models", "api", "tests")),
        )
        generation_id, events = await run_to_end(running, api_key, OPENAI)
        async with running.client(api_key) as client:
            files = (await client.get(f"/api/generations/{generation_id}/files")).json()
    assert events[-1]["type"] == "generation.succeeded"
    restarted = [e for e in of_type(events, "phase.started") if e["stage"] == "models"]
    assert [e["data"]["attempt"] for e in restarted] == [1, 2]
    assert "broke off" in restarted[1]["message"]
    paths = {f["path"] for f in files["files"]}
    assert "models/half_written.py" not in paths
    assert {f.path for f in ANSWERS["models"][0]} <= paths


async def test_a_model_that_hangs_fails_the_run_with_a_timeout(
    app_factory: AppFactory, api_key: str
) -> None:
    overrides = {"openai_timeout_s": 0.3, "openai_attempts": 2}
    async with openai_app(app_factory, **overrides) as (running, fake):
        fake.script(Hang(5), Hang(5))
        _, events = await run_to_end(running, api_key, OPENAI)
    assert events[-1]["type"] == "generation.failed"
    assert "did not answer within 0.3s (2 attempts)" in events[-1]["data"]["error"]
    assert not of_type(events, "file.saved")


async def test_a_rejected_key_fails_the_run_at_once_in_the_servers_words(
    app_factory: AppFactory, api_key: str
) -> None:
    async with openai_app(app_factory) as (running, fake):
        fake.script(Fail(401, f"Incorrect API key provided: {API_KEY}.", code="invalid_api_key"))
        generation_id, events = await run_to_end(running, api_key, OPENAI)
        async with running.client(api_key) as client:
            state = (await client.get(f"/api/generations/{generation_id}")).json()
    assert events[-1]["type"] == "generation.failed"
    assert len(fake.requests) == 1
    assert "401 invalid_api_key: Incorrect API key provided: ***." in state["error"]
    assert API_KEY not in str(events)


async def test_a_model_retry_is_logged_with_the_run_it_delays(
    app_factory: AppFactory, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with openai_app(app_factory) as (running, fake):
        fake.script(
            Fail(429, "Rate limit reached for requests."),
            *(Stream(ANSWERS[p.stage][1], 120, 80) for p in PHASES),
        )
        with caplog.at_level(logging.INFO):
            generation_id, events = await run_to_end(running, api_key, OPENAI)
    assert events[-1]["type"] == "generation.succeeded"
    logged = [record.msg for record in caplog.records if isinstance(record.msg, dict)]
    (retry,) = [line for line in logged if line["event"] == "model.retry"]
    assert retry["generation_id"] == generation_id
    assert (retry["provider"], retry["model"], retry["kind"]) == ("openai", "gpt-4o-mini", "api")
    assert (retry["request"], retry["requests_max"]) == (1, 4)
    assert "429" in retry["reason"]


async def test_cancel_mid_answer_ends_the_run_and_hangs_up_on_the_server(
    app_factory: AppFactory, api_key: str
) -> None:
    async with openai_app(app_factory) as (running, fake):
        fake.script(Stream(["Here is the core phase.\n", "never sent"], delay_s=30))
        async with running.client(api_key) as client:
            created = (await client.post("/api/generations", json=OPENAI)).json()
            url = f"/api/generations/{created['id']}"
            async with asyncio.timeout(10):
                while not of_type((await client.get(f"{url}/events")).json()["events"], DELTA):
                    await asyncio.sleep(0.02)
            assert (await client.post(f"{url}/cancel")).status_code == 202
            async with asyncio.timeout(10):
                while (await client.get(url)).json()["status"] == "running":
                    await asyncio.sleep(0.02)
                while fake.abandoned != [1]:
                    await asyncio.sleep(0.01)
            events = (await client.get(f"{url}/events?limit=1000")).json()["events"]
    assert events[-1]["type"] == "generation.cancelled"
    assert not of_type(events, "phase.completed")
    assert len(fake.requests) == 1


async def test_asking_for_openai_on_a_server_without_it_is_a_clear_400(
    app_factory: AppFactory, api_key: str
) -> None:
    async with (
        app_factory(openai_base_url=None, openai_api_key=None) as running,
        running.client(api_key) as client,
    ):
        answer = await client.post("/api/generations", json=OPENAI)
        listing = await client.get("/api/generations")
    assert answer.status_code == 400
    assert "GENSTREAM_OPENAI_BASE_URL" in answer.json()["detail"]
    assert listing.json()["items"] == []
