"""``service/web/runview.js`` fed a log directly, in the page itself (Chromium): the states a
real run reaches only with a frozen worker (a stall, then another worker resuming it) read in
words, and the timeline marks them on the run's row. The real runs are in test_app.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Page

from tests.conftest import RunningApp
from tests.web.browser import sign_in

pytestmark = pytest.mark.slow

ID = "00000000-0000-7000-8000-000000000001"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def event(seq: int, kind: str, status: str, at_s: float, **data: Any) -> dict[str, Any]:
    stage = data.get("phase", "starting")
    return {
        "generation_id": ID, "seq": seq, "type": kind, "status": status, "stage": stage,
        "progress": 0.1, "message": kind, "data": data,
        "timestamp": (T0 + timedelta(seconds=at_s)).isoformat(),
    }  # fmt: skip


LOG = [
    event(1, "generation.queued", "queued", 0),
    event(2, "generation.started", "running", 0.1, worker="w1", attempt=1, provider="offline",
          model=None),
    event(3, "phase.started", "running", 0.2, phase="core", number=1, of=4, attempt=1,
          provider="offline", model=None),
    event(4, "llm.delta", "running", 0.3, phase="core", attempt=1, text="x = 1\n"),
    event(5, "generation.stalled", "running", 30, worker="w1", attempt=1, silent_s=29.7),
    event(6, "generation.resumed", "running", 30.1, worker="w2", attempt=2,
          completed_phases=[], gap_s=29.8),
    event(7, "phase.started", "running", 30.2, phase="core", number=1, of=4, attempt=1,
          provider="offline", model=None),
]  # fmt: skip

# A RunView on the page's own DOM, fed the log up to a seq; what it then shows.
FEED = """async ([id, events]) => {
    const { RunView } = await import("/static/runview.js");
    const view = new RunView(id, { apiKey: "", api: async () => null, onEnd: () => {} });
    view.reset();
    view.connection = "live";
    const seen = [];
    for (const event of events) {
        view.render(event);
        view.slowAt = -Infinity;  // everything drawn now, not ten times a second
        view.draw();
        seen.push(document.getElementById("state").textContent);
    }
    const marks = [...document.querySelectorAll("#timeline svg .mark")];
    return {
        states: seen,
        marks: marks.map((m) => [m.dataset.type, m.textContent]),
        rows: [...document.querySelectorAll("#timeline svg .bar")].map((b) => b.dataset.row),
    };
}"""


async def test_a_stall_and_a_resume_read_in_words_and_are_marked_on_the_timeline(
    running: RunningApp, api_key: str, page: Page
) -> None:
    await sign_in(page, running, api_key)
    shown = await page.evaluate(FEED, [ID, LOG])
    assert shown["states"][4] == "live: stalled, worker w1 lost; waiting for another worker"
    assert shown["states"][5] == "live"
    assert shown["rows"] == ["run", "core"]
    assert shown["marks"] == [
        ["generation.stalled", "stalled: worker w1 lost (silent 29.7 s) (seq 5)"],
        ["generation.resumed", "resumed by worker w2 after 29.8 s (seq 6)"],
        ["phase.started", "restarted (seq 7)"],
    ]
