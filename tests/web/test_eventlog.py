"""The event log of the run view (``service/web/eventlog.js``) in Chromium: every event once,
the model's text folded into one row per stretch that unfolds, a filter by type, a search and
times relative to the run's first event; the stored log is the reference."""

from __future__ import annotations

from itertools import groupby
from typing import Any

import pytest
from playwright.async_api import Page

from tests.conftest import AppFactory, RunningApp
from tests.helpers import create_via_api, wait_for_status
from tests.web.browser import sign_in, wait_state

pytestmark = pytest.mark.slow


def stretches(events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """The (first, last) seqs of each run of consecutive deltas of one phase."""
    found = []
    for (is_delta, _), group in groupby(
        events, key=lambda e: (e["type"] == "llm.delta", e["data"].get("phase", e["stage"]))
    ):
        seqs = [event["seq"] for event in group]
        if is_delta:
            found.append((seqs[0], seqs[-1]))
    return found


async def visible_rows(page: Page) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await page.eval_on_selector_all(
        "#log tr:not([hidden])",
        "rows => rows.map(r => ({seq: r.cells[0].textContent, time: r.cells[1].textContent,"
        " type: r.dataset.type, text: r.textContent,"
        " first: r.dataset.first, last: r.dataset.last}))",
    )
    return rows


async def test_the_log_folds_the_model_text_filters_by_type_and_searches(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    async with app_factory(offline_delay_s=0.0) as running:
        async with running.client(api_key) as client:
            generation_id = (await create_via_api(client, verify="off"))["id"]
            await wait_for_status(client, generation_id)
            response = await client.get(
                f"/api/generations/{generation_id}/events", params={"limit": 1000}
            )
        events = response.json()["events"]
        await sign_in(page, running, api_key)
        await page.goto(f"{running.base_url}/?snapshot=0#{generation_id}")
        await page.reload()
        await wait_state(page, "finished")
        folded = await page.eval_on_selector_all(
            "#log tr.group",
            "rows => rows.map(r => [Number(r.dataset.first), Number(r.dataset.last)])",
        )
        rows = await visible_rows(page)
        first, last = folded[0]
        await page.click("#log tr.group button.fold")
        unfolded = await page.eval_on_selector_all(
            "#log tr.delta",
            "rows => rows.map(r => [Number(r.dataset.seq), r.cells[3].textContent])",
        )
        expanded = await page.get_attribute("#log tr.group button.fold", "aria-expanded")
        await page.keyboard.press("Enter")  # the button keeps the focus: Enter folds it again
        await page.wait_for_function("document.querySelectorAll('#log tr.delta').length === 0")
        await page.select_option("#log-filter", "file.saved")
        saved_rows = await visible_rows(page)
        await page.select_option("#log-filter", "")
        await page.fill("#log-search", "pyproject")
        found = await visible_rows(page)
        summary = await page.text_content("#log-summary") or ""
    deltas = {e["seq"]: e["data"]["text"] for e in events if e["type"] == "llm.delta"}
    others = [e["seq"] for e in events if e["type"] != "llm.delta"]
    assert [tuple(pair) for pair in folded] == stretches(events)
    assert len(rows) == len(others) + len(folded)
    assert [int(row["seq"]) for row in rows if row["type"] != "llm.delta"] == others
    assert unfolded == [[seq, deltas[seq]] for seq in range(first, last + 1)]
    assert expanded == "true"
    assert [row["type"] for row in saved_rows] == ["file.saved"] * sum(
        e["type"] == "file.saved" for e in events
    )
    # A folded stretch is found by its model text too.
    texts = {
        row["seq"]: "".join(deltas[s] for s in range(first, last + 1))
        for row in found
        if row["type"] == "llm.delta"
        for first, last in [(int(row["first"]), int(row["last"]))]
    }
    assert any(row["type"] == "file.saved" for row in found)
    assert all(
        "pyproject" in (texts[row["seq"]] if row["type"] == "llm.delta" else row["text"]).lower()
        for row in found
    )
    assert f"{len(events)} events" in summary
    assert f"{len(found)} match" in summary
    times = [float(row["time"].removeprefix("+").removesuffix(" s")) for row in rows]
    assert times[0] == 0.0
    assert times == sorted(times)


# An EventLog on the page's own table, fed deltas of one stretch: 3, unfolded, then more.
FEED_DELTAS = """async ([before, after, later]) => {
    const { EventLog } = await import("/static/eventlog.js");
    const $ = (id) => document.getElementById(id);
    const log = new EventLog({ body: $("log"), filter: $("log-filter"),
                               search: $("log-search"), summary: $("log-summary") });
    log.reset("2026-11-30T12:00:00+00:00");
    let seq = 0;
    const feed = (n) => {
        for (let i = 0; i < n; i += 1) {
            seq += 1;
            log.add({ seq, type: "llm.delta", stage: "core", status: "running", progress: 0.1,
                      message: "Writing", timestamp: "2026-11-30T12:00:01+00:00",
                      data: { phase: "core", attempt: 1, text: `line ${seq}\\n` } });
        }
        log.flush();
        return document.querySelectorAll("#log tr.delta").length;
    };
    const rows = [];
    feed(before);
    document.querySelector("#log tr.group button.fold").click();
    rows.push(document.querySelectorAll("#log tr.delta").length);
    rows.push(feed(after));
    const more = document.querySelector("#log tr.more button");
    rows.push(more ? more.textContent : null);
    more.click();
    rows.push(document.querySelectorAll("#log tr.delta").length);
    rows.push(feed(later));
    rows.push(document.querySelectorAll("#log tr.more").length);
    return rows;
}"""


async def test_an_unfolded_stretch_shows_new_text_live_and_offers_the_rest_past_500_rows(
    running: RunningApp, api_key: str, page: Page
) -> None:
    await sign_in(page, running, api_key)
    rows = await page.evaluate(FEED_DELTAS, [3, 600, 2])
    assert rows == [3, 500, "show the other 103", 603, 605, 0]
