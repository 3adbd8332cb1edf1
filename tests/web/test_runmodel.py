"""``service/web/runmodel.js``, the page's reduction of a run, against the server's own
(``service/snapshot.py``) in Chromium: fed every event of real runs (a model that stalls, is
retried and drops mid-answer; a run cancelled and retried), and restored from a snapshot
taken mid-run then fed the rest, it holds what the server's snapshot of the whole run holds."""

from __future__ import annotations

from typing import Any

import pytest
from httpx import AsyncClient
from playwright.async_api import Page

from service.generation.phases import PHASES
from tests.conftest import AppFactory, RunningApp
from tests.generation.fake_gemini import Drop, Hang, Stream
from tests.generation.model_runs import ANSWERS, gemini_app
from tests.helpers import SPEC, create_via_api, wait_for_status, wait_until
from tests.web.browser import blank_page

pytestmark = pytest.mark.slow

# The model, reduced in the page: fed `events` (after restoring `snapshot` when given).
REDUCE = """async ([id, snapshot, events]) => {
    const { RunModel } = await import("/static/runmodel.js");
    const run = snapshot ? RunModel.fromSnapshot(snapshot) : new RunModel(id);
    for (const event of events) run.apply(event);
    return {
        phases: [...run.phases.values()], files: [...run.files.values()], marks: run.marks,
        marks_dropped: run.marksDropped, tokens: run.tokens, counts: run.counts,
        verification: run.verification, error: run.error, attempt: run.attempt,
        provider: run.provider, model: run.model, status: run.status,
        created_at: run.createdAt, last_event: run.last,
    };
}"""
COMPARED = [
    "phases", "files", "marks", "marks_dropped", "tokens", "counts", "verification", "error",
    "attempt", "provider", "model", "status", "created_at", "last_event",
]  # fmt: skip


async def log_and_snapshot(client: AsyncClient, generation_id: str) -> tuple[list[Any], Any]:
    events = await client.get(f"/api/generations/{generation_id}/events", params={"limit": 1000})
    page = await client.get(
        f"/api/generations/{generation_id}/events", params={"snapshot": 1, "limit": 1000}
    )
    assert events.status_code == page.status_code == 200
    return events.json()["events"], page.json()["snapshot"]


async def reduced_in_page(
    page: Page, running: RunningApp, generation_id: str, snapshot: Any, events: list[Any]
) -> dict[str, Any]:
    await blank_page(page, running)
    result: dict[str, Any] = await page.evaluate(REDUCE, [generation_id, snapshot, events])
    return result


def server_side(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {key: snapshot[key] for key in COMPARED}


async def test_a_run_that_waited_retried_and_restarted_reduces_as_the_server_does(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    drop = "".join(ANSWERS["models"][1])[:40]
    async with gemini_app(app_factory, gemini_timeout_s=0.6, llm_waiting_s=0.15) as (
        running,
        fake,
    ):
        fake.script(
            Hang(5),  # core: waits, then asked again
            Stream(ANSWERS["core"][1], 120, 80),
            Drop([drop]),  # models: broke off, the phase starts again
            *(Stream(ANSWERS[p.stage][1], 120, 80) for p in PHASES[1:]),
        )
        async with running.client(api_key) as client:
            created = await client.post(
                "/api/generations", json={"spec": SPEC, "provider": "gemini", "verify": "compile"}
            )
            generation_id = created.json()["id"]
            await wait_for_status(client, generation_id)
            events, snapshot = await log_and_snapshot(client, generation_id)
        in_page = await reduced_in_page(page, running, generation_id, None, events)
    kinds = {mark["type"] for mark in snapshot["marks"]}
    assert {"llm.waiting", "llm.retrying", "phase.started"} <= kinds  # the run has them all
    assert events[-1]["type"] == "generation.succeeded"
    assert in_page == server_side(snapshot)


async def test_a_run_restored_mid_way_then_fed_the_rest_ends_where_the_server_does(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    """Cancelled, retried, finished: the page's model from a snapshot taken at some seq before
    the cancel, then fed every later event, equals the server's snapshot of the whole run."""
    async with app_factory(offline_delay_s=0.03) as running:
        async with running.client(api_key) as client:
            generation_id = (await create_via_api(client, verify="compile"))["id"]

            async def far_enough() -> Any:
                _, snapshot = await log_and_snapshot(client, generation_id)
                return snapshot if snapshot["seq"] >= 8 else None

            mid = await wait_until(far_enough, "the run at seq 8", 30)
            cancelled = await client.post(f"/api/generations/{generation_id}/cancel")
            assert cancelled.status_code in (200, 202), cancelled.text
            await wait_for_status(client, generation_id)
            retried = await client.post(f"/api/generations/{generation_id}/retry")
            assert retried.status_code == 202, retried.text
            await wait_until(
                lambda: finished(client, generation_id), "the retried run finished", 60
            )
            events, snapshot = await log_and_snapshot(client, generation_id)
        rest = [event for event in events if event["seq"] > mid["seq"]]
        from_mid = await reduced_in_page(page, running, generation_id, mid, rest)
        from_start = await reduced_in_page(page, running, generation_id, None, events)
    assert "generation.retried" in {mark["type"] for mark in snapshot["marks"]}
    assert snapshot["status"] == "succeeded"
    assert from_mid == from_start == server_side(snapshot)


async def finished(client: AsyncClient, generation_id: str) -> bool:
    state = (await client.get(f"/api/generations/{generation_id}")).json()
    return bool(state["status"] == "succeeded")
