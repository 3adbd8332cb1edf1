"""What the whole-generation tests against a fake model API share: an answer per phase, and
running a generation to its end through the HTTP API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pydantic import SecretStr

from service.events import NewFile
from service.generation.parsing import render_block
from service.generation.phases import PHASES
from tests.conftest import AppFactory, RunningApp
from tests.generation.fake_gemini import FakeGemini


def phase_answer(stage: str) -> tuple[list[NewFile], list[str]]:
    """Three files for ``stage``, and the answer that writes them, in 40-character chunks."""
    files = [
        NewFile(f"{stage}/module_{i}.py", f'"""{stage} {i}"""\n\nVALUE = {i}\n', "python")
        for i in range(3)
    ]
    text = f"Here is the {stage} phase.\n" + "".join(render_block(f) for f in files)
    return files, [text[i : i + 40] for i in range(0, len(text), 40)]


ANSWERS = {phase.stage: phase_answer(phase.stage) for phase in PHASES}


@asynccontextmanager
async def gemini_app(
    app_factory: AppFactory, **overrides: Any
) -> AsyncIterator[tuple[RunningApp, FakeGemini]]:
    async with FakeGemini() as fake:
        settings = {
            "gemini_api_key": SecretStr("test-gemini-key"),
            "gemini_base_url": fake.base_url,
            "gemini_backoff_s": 0.0,
            "gemini_timeout_s": 5.0,
            "delta_flush_s": 0.0,
            **overrides,
        }
        async with app_factory(**settings) as running:
            yield running, fake


async def run_to_end(
    running: RunningApp, key: str, body: dict[str, Any], seconds: float = 60
) -> tuple[str, list[Any]]:
    """Create a generation with ``body``; its id and every event once it has ended."""
    async with running.client(key) as client:
        created = await client.post("/api/generations", json=body)
        assert created.status_code == 201, created.text
        generation_id = created.json()["id"]
        async with asyncio.timeout(seconds):
            while True:
                state = (await client.get(f"/api/generations/{generation_id}")).json()
                if state["status"] not in ("queued", "running"):
                    break
                await asyncio.sleep(0.05)
        page = await client.get(f"/api/generations/{generation_id}/events?limit=1000")
    return generation_id, page.json()["events"]


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [event for event in events if event["type"] == kind]
