"""``service/web/timeline.js`` on the run view in Chromium: a bar per phase placed on one time
axis by the events' own times, coloured by outcome, the run's waits, retries and restarts
marked where they happened, and every bar's details reachable by the keyboard."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from playwright.async_api import Page

from service.generation.phases import PHASES
from tests.conftest import AppFactory
from tests.generation.fake_gemini import Drop, Hang, Stream
from tests.generation.model_runs import ANSWERS, gemini_app
from tests.helpers import SPEC, wait_for_status
from tests.web.browser import screenshot_path, sign_in, wait_state

pytestmark = pytest.mark.slow

DRAWN = """() => ({
    bars: [...document.querySelectorAll('#timeline svg .bar')].map((b) => ({
        row: b.dataset.row, cls: b.getAttribute('class'), x: Number(b.getAttribute('x')),
        width: Number(b.getAttribute('width')), label: b.getAttribute('aria-label'),
    })),
    marks: [...document.querySelectorAll('#timeline svg .mark')].map((m) => ({
        type: m.dataset.type, title: m.textContent,
    })),
})"""


def at(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


@pytest.mark.parametrize("source", ["events", "snapshot"])
async def test_the_timeline_draws_each_phase_at_its_time_with_its_marks(
    app_factory: AppFactory, api_key: str, page: Page, source: str
) -> None:
    drop = "".join(ANSWERS["models"][1])[:40]
    async with gemini_app(app_factory, gemini_timeout_s=0.6, llm_waiting_s=0.15) as (
        running,
        fake,
    ):
        fake.script(
            Hang(5),
            Stream(ANSWERS["core"][1], 120, 80),
            Drop([drop]),
            *(Stream(ANSWERS[p.stage][1], 120, 80) for p in PHASES[1:]),
        )
        async with running.client(api_key) as client:
            created = await client.post(
                "/api/generations", json={"spec": SPEC, "provider": "gemini", "verify": "compile"}
            )
            generation_id = created.json()["id"]
            await wait_for_status(client, generation_id)
            response = await client.get(
                f"/api/generations/{generation_id}/events", params={"snapshot": 1}
            )
        snapshot: dict[str, Any] = response.json()["snapshot"]
        await sign_in(page, running, api_key)
        query = "?snapshot=0" if source == "events" else ""
        await page.goto(f"{running.base_url}/{query}#{generation_id}")
        await page.reload()
        await wait_state(page, "finished")
        drawn = await page.evaluate(DRAWN)
        await page.focus("#timeline svg .bar[data-row=core]")
        core_details = await page.text_content("#timeline .timeline-details") or ""
        await page.keyboard.press("Tab")  # the next bar
        next_details = await page.text_content("#timeline .timeline-details") or ""
        await page.screenshot(path=screenshot_path(f"timeline-{source}"), full_page=True)
    phases = snapshot["phases"]
    bars = drawn["bars"]
    assert [bar["row"] for bar in bars] == ["run", "core", "models", "api", "tests", "verify"]
    assert all(bar["cls"] == "bar ok" for bar in bars)
    # Placed by the events' times: x grows with the phase's first start, linearly.
    start, end = at(snapshot["created_at"]), at(snapshot["timestamp"])
    left, right = bars[0]["x"], bars[0]["x"] + bars[0]["width"]
    for bar, phase in zip(bars[1:], phases, strict=True):
        expected = left + (at(phase["first_started_at"]) - start) / (end - start) * (right - left)
        assert bar["x"] == pytest.approx(
            expected, abs=1.5
        )  # ms in the page (0.7 px each here), µs in Python
        finished = left + (at(phase["completed_at"]) - start) / (end - start) * (right - left)
        assert bar["x"] + bar["width"] == pytest.approx(
            max(finished, bar["x"] + 2), abs=1.5
        )  # ms in the page, µs here
    assert [mark["type"] for mark in drawn["marks"]] == [m["type"] for m in snapshot["marks"]]
    assert {"llm.waiting", "llm.retrying", "phase.started"} <= {m["type"] for m in drawn["marks"]}
    core = phases[0]
    assert core_details.startswith("core: completed")
    assert f"{core['prompt_tokens']} tokens in, {core['output_tokens']} out" in core_details
    assert "model retr" in core_details
    assert next_details.startswith("models: completed")
    assert "started 2 times" in next_details
