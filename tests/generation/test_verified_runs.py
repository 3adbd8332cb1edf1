"""Whole runs verified for real: the service over HTTP, its worker and log, bubblewrap, and
pytest inside the sandbox. Offline runs of several sizes pass; a model (the real google-genai
SDK against the fake Gemini server) whose code fails is repaired, or fails in words. Each
model run is followed live over SSE, and the stream is the log, event for event."""

from __future__ import annotations

import asyncio
import io
import json
import zipfile
from typing import Any

import pytest
from httpx_sse import aconnect_sse

from bench.cases.verify import spec_of
from service.events import NewFile
from service.generation.parsing import render_block
from service.generation.phases import PHASES, PHASES_END
from service.generation.providers.offline import render_phase
from service.spec import Spec
from tests.conftest import AppFactory, KeyFactory, RunningApp
from tests.generation.fake_gemini import Stream
from tests.generation.model_runs import gemini_app, of_type
from tests.helpers import API, assert_documented, create_via_api, events_via_api, wait_until

STAGES = [phase.stage for phase in PHASES]
SPEC: dict[str, Any] = {
    "project": "shop",
    "entities": [
        {"name": "User", "fields": {"email": "str", "age": "int"}},
        {"name": "Order", "fields": {"user": "User", "total": "float"}},
    ],
}
BROKEN_LINE = "\ndef broken(:\n    pass\n"
VERSION_TEST = NewFile(
    "tests/test_version.py",
    '"""The release named by the spec."""\n\nfrom app.version import VERSION\n\n\n'
    'def test_the_version_is_one() -> None:\n    assert VERSION == "1.0"\n',
    "python",
)


async def run_streamed(
    running: RunningApp, key: str, body: dict[str, Any], seconds: float = 120
) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """Create a generation and follow its stream to the end: its id, the events the stream
    sent, and the events the log holds afterwards."""
    async with running.client(key) as client:
        created = await create_via_api(client, **body)
        streamed: list[dict[str, Any]] = []
        async with (
            asyncio.timeout(seconds),
            aconnect_sse(
                client,
                "GET",
                f"{API}/{created['id']}/stream",
                params={"token": created["stream_token"]},
            ) as source,
        ):
            async for frame in source.aiter_sse():
                if frame.data:
                    streamed.append(json.loads(frame.data))
        stored = await events_via_api(client, created["id"])
    return created["id"], streamed, stored


def project(spec: dict[str, Any]) -> dict[str, list[NewFile]]:
    """The offline templates' files of each phase: a project known to pass its checks."""
    model = Spec.model_validate(spec)
    return {stage: render_phase(model, stage) for stage in STAGES}


def answer(files: list[NewFile]) -> Stream:
    text = "Here are the files.\n" + "".join(render_block(file) for file in files)
    return Stream([text[i : i + 500] for i in range(0, len(text), 500)], 900, 400)


def replaced(files: list[NewFile], path: str, content: str) -> list[NewFile]:
    return [NewFile(path, content, f.language) if f.path == path else f for f in files]


def main_of(files: dict[str, list[NewFile]]) -> str:
    return next(f.content for f in files["core"] if f.path == "app/main.py")


def stages_completed(events: list[dict[str, Any]]) -> list[str]:
    return [event["stage"] for event in of_type(events, "phase.completed")]


# -- offline: the templates' projects pass, at several sizes -----------------------------------


@pytest.mark.parametrize(
    "entities", [1, 3, pytest.param(10, marks=pytest.mark.slow)], ids=lambda n: f"{n}-entities"
)
async def test_an_offline_run_verifies_its_project_compiles_imports_and_passes_its_tests(
    app_factory: AppFactory, make_key: KeyFactory, entities: int
) -> None:
    key = await make_key("alice")
    spec = spec_of(entities).model_dump(mode="json", exclude_none=True)
    async with app_factory(offline_delay_s=0.0, verify_default="tests") as running:
        _, streamed, events = await run_streamed(running, key, {"spec": spec})

    assert streamed == events
    assert stages_completed(events) == [*STAGES, "verify"]
    checks = of_type(events, "check.completed")
    for event in checks:
        assert_documented(event)
    assert [(c["data"]["step"], c["data"]["ok"]) for c in checks] == [
        ("compile", True),
        ("import", True),
        ("tests", True),
    ]
    python = {e["data"]["path"] for e in of_type(events, "file.saved")} & {
        path for path in (e["data"]["path"] for e in of_type(events, "file.saved"))
        if path.endswith(".py")
    }  # fmt: skip
    compiled, imported, tested = (c["data"]["counts"] for c in checks)
    assert compiled == {"passed": len(python), "failed": 0, "errors": 0, "skipped": 0,
                        "total": len(python)}  # fmt: skip
    assert imported["passed"] == 1
    assert tested["passed"] >= 5 * entities
    assert (tested["failed"], tested["errors"]) == (0, 0)
    end = events[-1]
    assert end["type"] == "generation.succeeded"
    assert_documented(end)
    verification = end["data"]["verification"]
    assert verification["ok"] is True
    assert (verification["level"], verification["rounds"], verification["repairs"]) == (
        "tests",
        1,
        0,
    )
    assert verification["checks"] == [c["data"] for c in checks]
    assert end["message"] == (
        f"Generation finished and verified: {len(python)} Python files compile; app.main "
        f"imports; {tested['passed']} generated tests pass"
    )
    progress = [event["progress"] for event in events]
    assert progress == sorted(progress)
    assert of_type(events, "phase.completed")[-1]["progress"] == PHASES_END


async def test_the_request_chooses_the_level_and_the_server_default_applies_without_one(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    key = await make_key("alice")
    async with app_factory(offline_delay_s=0.0, verify_default="compile") as running:
        default_id, _, by_default = await run_streamed(running, key, {"spec": SPEC})
        _, _, switched_off = await run_streamed(running, key, {"spec": SPEC, "verify": "off"})
        async with running.client(key) as client:
            state = (await client.get(f"{API}/{default_id}")).json()
            before = (await client.get(API)).json()["items"]
            refused = await client.post(API, json={"spec": SPEC, "verify": "everything"})
            after = (await client.get(API)).json()["items"]

    assert state["verify"] == "compile"
    assert [c["data"]["step"] for c in of_type(by_default, "check.completed")] == ["compile"]
    assert by_default[-1]["data"]["verification"]["level"] == "compile"
    assert of_type(switched_off, "check.completed") == []
    assert stages_completed(switched_off) == STAGES
    assert switched_off[-1]["data"]["verification"]["summary"] == "not verified (verify: off)"
    assert switched_off[-1]["message"] == "Generation finished"
    assert refused.status_code == 400
    assert "verify" in refused.text
    assert after == before, "a refused request stored a generation"


async def test_an_offline_project_that_fails_ends_failed_at_once_without_a_repair(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    """A template cannot repair: a spec whose generated tests fail (a sandbox too small for
    them) fails after the first round, with the reason and the files kept."""
    key = await make_key("alice")
    async with app_factory(offline_delay_s=0.0, verify_wall_s=0.3) as running:
        generation_id, _, events = await run_streamed(
            running, key, {"spec": SPEC, "verify": "tests"}
        )
        async with running.client(key) as client:
            archive = await client.get(f"{API}/{generation_id}/archive")

    assert "repair" not in stages_completed(events)
    end = events[-1]
    assert end["type"] == "generation.failed"
    assert_documented(end)
    assert end["data"]["error"].startswith("the generated code did not pass verification: ")
    assert "was stopped: it ran longer than 0.3 s" in end["data"]["error"], end["data"]
    assert end["data"]["verification"]["ok"] is False
    failed_check = end["data"]["verification"]["checks"][-1]
    assert failed_check["stopped_by"] == "timeout"
    assert archive.status_code == 200


# -- a model: repaired, or failed in words ------------------------------------------------------


async def test_a_syntax_error_is_repaired_on_the_first_attempt(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    key = await make_key("alice")
    files = project(SPEC)
    fixed = main_of(files)
    broken = fixed + BROKEN_LINE
    files["core"] = replaced(files["core"], "app/main.py", broken)
    async with gemini_app(app_factory, verify_default="tests") as (running, fake):
        fake.script(*(answer(files[stage]) for stage in STAGES))
        fake.script(answer([NewFile("app/main.py", fixed, "python")]))
        generation_id, streamed, events = await run_streamed(
            running, key, {"spec": SPEC, "provider": "gemini"}
        )
        async with running.client(key) as client:
            listed = (await client.get(f"{API}/{generation_id}/files")).json()["files"]
            served = await client.get(f"{API}/{generation_id}/files/app/main.py")
            archive = await client.get(f"{API}/{generation_id}/archive")

    assert streamed == events
    assert stages_completed(events) == [*STAGES, "verify", "repair", "verify"]
    first, second = (e["data"]["verification"] for e in of_type(events, "phase.completed")
                     if e["stage"] == "verify")  # fmt: skip
    assert first["ok"] is False
    assert first["checks"][0]["failing"] == ["app/main.py"]
    assert first["summary"].startswith("app/main.py does not compile: line ")
    assert second["ok"] is True
    assert (second["rounds"], second["repairs"]) == (2, 1)
    assert events[-1]["type"] == "generation.succeeded"
    assert events[-1]["data"]["verification"] == second
    # The repair request held the reason and the broken file; the log keeps both versions.
    repair_request = fake.requests[len(STAGES)].user_text
    assert first["summary"] in repair_request
    assert "def broken(:" in repair_request
    versions = [e["data"]["sha256"] for e in of_type(events, "file.saved")
                if e["data"]["path"] == "app/main.py"]  # fmt: skip
    assert versions == [NewFile("app/main.py", broken, "python").sha256,
                        NewFile("app/main.py", fixed, "python").sha256]  # fmt: skip
    # The files endpoints and the zip serve the newest version.
    assert served.text == fixed
    assert [f["sha256"] for f in listed if f["path"] == "app/main.py"] == versions[-1:]
    with zipfile.ZipFile(io.BytesIO(archive.content)) as unpacked:
        assert unpacked.read("app/main.py").decode() == fixed
    repaired = next(e for e in of_type(events, "phase.completed") if e["stage"] == "repair")
    assert (repaired["data"]["prompt_tokens"], repaired["data"]["output_tokens"]) == (900, 400)


async def test_failing_tests_are_repaired_after_their_output_is_sent_to_the_model(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    key = await make_key("alice")
    files = project(SPEC)
    files["core"].append(NewFile("app/version.py", 'VERSION = "0.1"\n', "python"))
    files["tests"].append(VERSION_TEST)
    async with gemini_app(app_factory, verify_default="tests") as (running, fake):
        fake.script(*(answer(files[stage]) for stage in STAGES))
        fake.script(answer([NewFile("app/version.py", 'VERSION = "1.0"\n', "python")]))
        _, streamed, events = await run_streamed(running, key, {"spec": SPEC, "provider": "gemini"})

    assert streamed == events
    failing = of_type(events, "check.completed")[2]["data"]
    assert failing["step"] == "tests"
    assert failing["ok"] is False
    assert failing["failing"] == ["tests.test_version.test_the_version_is_one"]
    assert failing["reason"].startswith("1 of ")
    assert failing["reason"].endswith(" generated tests fail: test_the_version_is_one")
    assert "AssertionError" in failing["output"]
    # The model was shown the output, and the test module it names, whole.
    repair_request = fake.requests[len(STAGES)].user_text
    assert 'assert VERSION == "1.0"' in repair_request
    assert failing["output"].strip()[-2000:] in repair_request
    assert stages_completed(events) == [*STAGES, "verify", "repair", "verify"]
    assert events[-1]["type"] == "generation.succeeded"
    assert events[-1]["data"]["verification"]["checks"][2]["counts"]["failed"] == 0


async def test_code_that_stays_broken_fails_after_the_repairs_and_its_files_stay(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    key = await make_key("alice")
    files = project(SPEC)
    broken = main_of(files) + BROKEN_LINE
    files["core"] = replaced(files["core"], "app/main.py", broken)
    still_broken = answer([NewFile("app/main.py", broken, "python")])
    async with gemini_app(app_factory, verify_default="tests", repair_attempts=2) as (
        running,
        fake,
    ):
        fake.script(*(answer(files[stage]) for stage in STAGES), still_broken, still_broken)
        generation_id, streamed, events = await run_streamed(
            running, key, {"spec": SPEC, "provider": "gemini"}
        )
        async with running.client(key) as client:
            served = await client.get(f"{API}/{generation_id}/files/app/main.py")
            archive = await client.get(f"{API}/{generation_id}/archive")
            state = (await client.get(f"{API}/{generation_id}")).json()

    assert streamed == events
    assert stages_completed(events) == [*STAGES, "verify", "repair", "verify", "repair", "verify"]
    end = events[-1]
    assert end["type"] == "generation.failed"
    assert_documented(end)
    summary = end["data"]["verification"]["summary"]
    assert end["data"]["error"] == (
        f"the generated code did not pass verification (after 2 repairs): {summary}"
    )
    assert summary.startswith("app/main.py does not compile: line ")
    assert state["error"] == end["data"]["error"]
    assert (end["data"]["verification"]["rounds"], end["data"]["verification"]["repairs"]) == (
        3,
        2,
    )
    assert len(fake.requests) == len(STAGES) + 2
    assert served.status_code == 200
    assert served.text == broken
    assert archive.status_code == 200


# -- generated code is untrusted: what it can reach, and what stops it ---------------------------


def probes(port: int, data_dir: str) -> NewFile:
    """Generated tests that pass only if the sandbox holds: no secret, no network, nowhere to
    write but its own directory."""
    text = f'''"""What the generated code can reach from inside the sandbox."""

import os
import socket

import pytest


def test_no_setting_or_secret_of_the_service_is_in_the_environment() -> None:
    assert "DATABASE_URL" not in os.environ
    assert not [name for name in os.environ if "GENSTREAM" in name or "GEMINI" in name]
    assert "probe-secret" not in " ".join(os.environ.values())


def test_the_network_is_unreachable() -> None:
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", {port}), timeout=2)


@pytest.mark.parametrize("path", ["/usr/evil", "/etc/evil", {data_dir + "/evil"!r}])
def test_nothing_outside_the_project_is_writable(path: str) -> None:
    with pytest.raises(OSError):
        open(path, "w")
'''
    return NewFile("tests/test_probes.py", text, "python")


async def test_generated_tests_find_no_secret_no_network_and_nowhere_to_write(
    app_factory: AppFactory, make_key: KeyFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    key = await make_key("alice")
    monkeypatch.setenv("DATABASE_URL", "postgresql://probe-secret@db/genstream")
    monkeypatch.setenv("GENSTREAM_PROBE", "probe-secret")
    files = project(SPEC)
    async with gemini_app(app_factory, verify_default="tests") as (running, fake):
        port = int(running.base_url.rsplit(":", 1)[1])
        files["tests"].append(probes(port, str(tmp_path)))
        fake.script(*(answer(files[stage]) for stage in STAGES))
        _, _, events = await run_streamed(running, key, {"spec": SPEC, "provider": "gemini"})

    tests = of_type(events, "check.completed")[-1]["data"]
    assert tests["ok"] is True, tests["output"]
    assert events[-1]["type"] == "generation.succeeded"
    assert not (tmp_path / "evil").exists()


async def test_a_suite_that_spins_is_stopped_in_words_while_the_worker_runs_another(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    key = await make_key("alice")
    files = project(SPEC)
    spin = "def test_spins_for_ever() -> None:\n    while True:\n        pass\n"
    files["tests"].append(NewFile("tests/test_spin.py", spin, "python"))
    async with gemini_app(
        app_factory, verify_default="tests", verify_cpu_s=3, repair_attempts=0
    ) as (running, fake):
        fake.script(*(answer(files[stage]) for stage in STAGES))
        hostile = asyncio.create_task(
            run_streamed(running, key, {"spec": SPEC, "provider": "gemini"})
        )
        async with running.client(key) as client:

            async def verifying() -> bool:
                listed = (await client.get(API)).json()["items"]
                return any(item["stage"] == "verify" for item in listed)

            await wait_until(verifying, "the hostile run starts verifying", 60)
            _, _, other = await run_streamed(running, key, {"spec": SPEC, "verify": "off"})
        _, _, events = await hostile

    stopped = of_type(events, "check.completed")[-1]
    assert other[-1]["type"] == "generation.succeeded"
    assert other[-1]["timestamp"] < stopped["timestamp"], "the other run waited for the suite"
    assert stopped["data"]["step"] == "tests"
    assert stopped["data"]["stopped_by"] == "cpu"
    assert stopped["data"]["reason"].startswith(
        "the test suite was stopped: it used more than 3 s of CPU time"
    )
    assert events[-1]["type"] == "generation.failed"
    assert events[-1]["data"]["error"] == (
        f"the generated code did not pass verification: {stopped['data']['reason']}"
    )
