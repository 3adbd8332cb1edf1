"""Whole generations with provider "gemini": the real service, the real google-genai SDK, a
fake Gemini HTTP server. What the model answered is exactly what the log and files hold."""

from __future__ import annotations

import asyncio
import io
import logging
import zipfile

import pytest

from service.events import NewFile
from service.generation.parsing import render_block
from service.generation.phases import PHASES
from tests.conftest import AppFactory, RunningApp
from tests.generation.fake_gemini import Drop, Fail, Hang, Stream
from tests.generation.model_runs import ANSWERS, gemini_app, of_type, run_to_end
from tests.helpers import SPEC, assert_documented


async def test_a_gemini_run_stores_exactly_what_the_model_answered(
    app_factory: AppFactory, api_key: str
) -> None:
    async with gemini_app(app_factory) as (running, fake):
        fake.script(*(Stream(ANSWERS[p.stage][1], 120, 80) for p in PHASES))
        generation_id, events = await run_to_end(
            running, api_key, {"spec": SPEC, "provider": "gemini"}
        )
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
            assert completed["data"]["provider"] == "gemini"
        async with running.client(api_key) as client:
            archive = await client.get(f"/api/generations/{generation_id}/archive")
            one = await client.get(f"/api/generations/{generation_id}/files/{expected[0].path}")
        assert archive.headers["content-type"] == "application/zip"
        with zipfile.ZipFile(io.BytesIO(archive.content)) as unpacked:
            assert {name: unpacked.read(name).decode() for name in unpacked.namelist()} == {
                f.path: f.content for f in expected
            }
        assert one.text == expected[0].content
        assert all("gemini-3.8-flash" in r.path for r in fake.requests)
        assert "Project specification" in fake.requests[0].user_text
        assert "core/module_0.py" in fake.requests[1].user_text  # earlier files as context


async def test_a_stream_that_drops_mid_answer_restarts_the_phase_without_mixing_files(
    app_factory: AppFactory, api_key: str
) -> None:
    broken_files = [NewFile("models/half_written.py", "X = 1\n", "python")]
    broken = "".join(render_block(f) for f in broken_files)
    async with gemini_app(app_factory) as (running, fake):
        fake.script(
            Stream(ANSWERS["core"][1]),
            Drop([broken[:30], broken[30:]]),
            Stream(ANSWERS["models"][1]),
            Stream(ANSWERS["api"][1]),
            Stream(ANSWERS["tests"][1]),
        )
        generation_id, events = await run_to_end(
            running, api_key, {"spec": SPEC, "provider": "gemini"}
        )
        async with running.client(api_key) as client:
            files = (await client.get(f"/api/generations/{generation_id}/files")).json()
    assert events[-1]["type"] == "generation.succeeded"
    restarted = [e for e in of_type(events, "phase.started") if e["stage"] == "models"]
    assert [e["data"]["attempt"] for e in restarted] == [1, 2]
    assert "broke off" in restarted[1]["message"]
    paths = {f["path"] for f in files["files"]}
    assert "models/half_written.py" not in paths
    assert {f.path for f in ANSWERS["models"][0]} <= paths
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def test_a_model_that_answers_malformed_twice_fails_the_run_in_words(
    app_factory: AppFactory, api_key: str
) -> None:
    async with gemini_app(app_factory) as (running, fake):
        fake.script(Stream(["I would rather explain."]), Stream(["Still no files, sorry."]))
        generation_id, events = await run_to_end(
            running, api_key, {"spec": SPEC, "provider": "gemini"}
        )
        async with running.client(api_key) as client:
            state = (await client.get(f"/api/generations/{generation_id}")).json()
    assert [e["type"] for e in events][-1] == "generation.failed"
    assert len(of_type(events, "generation.failed")) == 1
    assert state["status"] == "failed"
    assert "malformed" in state["error"]
    assert "no file blocks" in state["error"]
    assert "could not be used" in fake.requests[1].user_text


async def test_a_model_that_hangs_fails_the_run_with_a_timeout(
    app_factory: AppFactory, api_key: str
) -> None:
    async with gemini_app(app_factory, gemini_timeout_s=0.3, gemini_attempts=2) as (
        running,
        fake,
    ):
        fake.script(Hang(5), Hang(5))
        _, events = await run_to_end(running, api_key, {"spec": SPEC, "provider": "gemini"})
    assert events[-1]["type"] == "generation.failed"
    assert "did not answer within" in events[-1]["data"]["error"]
    assert not of_type(events, "file.saved")


async def test_a_silent_model_shows_as_waiting_then_retrying_until_it_answers(
    app_factory: AppFactory, api_key: str
) -> None:
    """Gemini hangs (sends nothing) past the call's timeout once, then answers: the phase's
    log says it waited, that the request was retried, and then the text came."""
    async with gemini_app(app_factory, gemini_timeout_s=0.6, llm_waiting_s=0.15) as (
        running,
        fake,
    ):
        fake.script(Hang(5), *(Stream(ANSWERS[p.stage][1], 120, 80) for p in PHASES))
        _, events = await run_to_end(running, api_key, {"spec": SPEC, "provider": "gemini"})

    assert events[-1]["type"] == "generation.succeeded"
    core = [e for e in events if e["stage"] == "core"]
    kinds = [e["type"] for e in core]
    first_text = kinds.index("llm.delta")
    waiting = [e for e in core[:first_text] if e["type"] == "llm.waiting"]
    assert len(waiting) >= 2, kinds
    assert kinds.index("llm.retrying") < first_text
    for event in waiting:
        assert_documented(event)
    waited = [e["data"]["waited_s"] for e in waiting]
    assert waited == sorted(waited)
    assert all(s >= 0.1 for s in waited)
    (retrying,) = of_type(events, "llm.retrying")
    assert "did not answer within" in retrying["data"]["reason"]


async def test_cancel_mid_phase_ends_the_run_with_no_file_after_it(
    app_factory: AppFactory, api_key: str
) -> None:
    slow = [ANSWERS["core"][1][0]] * 200
    async with gemini_app(app_factory, delta_flush_s=0.0) as (running, fake):
        fake.script(Stream(slow, delay_s=0.02))
        async with running.client(api_key) as client:
            created = (
                await client.post("/api/generations", json={"spec": SPEC, "provider": "gemini"})
            ).json()
            url = f"/api/generations/{created['id']}"
            async with asyncio.timeout(10):
                while not (await client.get(f"{url}/events")).json()["events"][2:]:
                    await asyncio.sleep(0.02)
            assert (await client.post(f"{url}/cancel")).status_code == 202
            async with asyncio.timeout(10):
                while (await client.get(url)).json()["status"] == "running":
                    await asyncio.sleep(0.02)
            events = (await client.get(f"{url}/events?limit=1000")).json()["events"]
    assert events[-1]["type"] == "generation.cancelled"
    assert not of_type(events, "file.saved")
    assert not of_type(events, "phase.completed")


async def test_asking_for_gemini_without_a_key_is_a_clear_400(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        answer = await client.post("/api/generations", json={"spec": SPEC, "provider": "gemini"})
    assert answer.status_code == 400
    assert "GEMINI_API_KEY" in answer.json()["detail"]


async def test_a_model_retry_is_logged_with_the_run_it_delays(
    app_factory: AppFactory, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The provider knows nothing of runs: the run's context (bound in its task) names it."""
    async with gemini_app(app_factory) as (running, fake):
        fake.script(
            Fail(429, "Resource has been exhausted (e.g. check quota)."),
            *(Stream(ANSWERS[p.stage][1], 120, 80) for p in PHASES),
        )
        with caplog.at_level(logging.INFO):
            generation_id, events = await run_to_end(
                running, api_key, {"spec": SPEC, "provider": "gemini"}
            )
    assert events[-1]["type"] == "generation.succeeded"
    logged = [record.msg for record in caplog.records if isinstance(record.msg, dict)]
    (retry,) = [line for line in logged if line["event"] == "model.retry"]
    assert retry["generation_id"] == generation_id
    assert (retry["attempt"], retry["owner"], retry["kind"]) == (1, "alice", "api")
    assert (retry["request"], retry["requests_max"]) == (1, 4)
    assert "429" in retry["reason"]
    assert retry["wait_s"] >= 0
    finished = [line for line in logged if line["event"] == "run.finished"]
    assert [(line["generation_id"], line["outcome"]) for line in finished] == [
        (generation_id, "succeeded")
    ]
    # Readers see it too: the retry is an event of the phase it delays, before any text.
    (retrying,) = of_type(events, "llm.retrying")
    assert_documented(retrying)
    core = [e["type"] for e in events if e["stage"] == "core"]
    assert core.index("llm.retrying") < core.index("llm.delta")
    assert retrying["data"]["request"] == 1
    assert retrying["data"]["of"] == 4
    assert retrying["data"]["wait_s"] == retry["wait_s"]
    assert "429" in retrying["data"]["reason"]
    assert retrying["message"].startswith("Gemini did not answer: retry 1 of 3 in ")
