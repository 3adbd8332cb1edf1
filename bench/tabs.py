"""Chromium tabs as the page's cases drive them (case 10; case 9 checks its logs with it).

Every tab is a fresh browser context (cold cache, its own renderer), 1200 by 1000, that runs
``PROBE`` before the page's own scripts: the API key where the page looks for it, a
``requestAnimationFrame`` loop noting every frame's time and the events the page shows then
(its ``events`` figure), observers of long tasks (``longtask``) and of Event Timing (``event``
with ``durationThreshold`` 16, and ``first-input``), both buffered, and MutationObservers on
``#state`` and the timeline's SVG that note the page's clock when ``#state`` first reads
``live``, and when it first reads ``finished`` with the timeline's bars drawn, with what the
log stands for then (``LOG_COVERAGE``). Clicks are Playwright's (trusted input events through
the browser's input path), each timed from its Event Timing entries (``interactions``).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from playwright.async_api import Browser, ConsoleMessage, Page

from service.generation.phases import PHASES

MAX_FRAMES = 1 << 16
EVENT_THRESHOLD_MS = 16  # Event Timing's smallest durationThreshold: quicker ones go unreported
VIEWPORT = {"width": 1200, "height": 1000}
BARS = 1 + len(PHASES)  # the timeline's bars of a finished run: the run's, one per phase
FILE_BUTTON = "#files li[data-path] button"
FOLD_BUTTON = "#log tr.group button.fold"
THEME_BUTTON = "#theme"
REPORT_PREFIX = "genstream-bench-page "

# The events the page's event log stands for, as a JavaScript function of its <tbody>: the
# snapshot's row stands for 1..data-through, a folded stretch of llm.delta for
# data-first..data-last, any other row for its data-seq, and an opened stretch's own rows
# (tr.delta) are inside their stretch. The page starts a new row (or stretch) for any event
# that does not follow the one before, so rows that follow each other from 1 without a gap or
# an overlap are every event exactly once.
LOG_COVERAGE = """(log) => {
  let next = 1;
  const problems = [];
  for (const tr of log.rows) {
    if (tr.classList.contains("delta")) continue;
    const { through, first, last, seq, type } = tr.dataset;
    const [from, to] = through ? [1, Number(through)]
      : first ? [Number(first), Number(last)] : [Number(seq), Number(seq)];
    if (from !== next && problems.length < 5) {
      problems.push(`${type} ${from}-${to} after ${next - 1}`);
    }
    next = to + 1;
  }
  return { through: next - 1, rows: log.rows.length, problems };
}"""


def check_coverage(covered: dict[str, Any], events: int, what: str) -> None:
    """``LOG_COVERAGE``'s answer says events 1..``events``, each once, or this raises."""
    if covered["through"] != events or covered["problems"]:
        raise RuntimeError(
            f"{what}: the log stands for events 1-{covered['through']}, not 1-{events} "
            f"(in {covered['rows']} rows; {'; '.join(covered['problems']) or 'no gaps'})"
        )


# See the module's docstring. Reports go to the console, which reaches Playwright while the
# tab's main thread is busy (an evaluate would wait for it); the bulk is read at the end.
PROBE = """
(() => {
  const config = %(config)s;
  try { localStorage.setItem("genstream.apiKey", config.key); } catch (_) { return; }
  const report = (what) => console.debug(config.prefix + JSON.stringify(what));
  const probe = {
    frames: new Float64Array(config.maxFrames), shown: new Int32Array(config.maxFrames),
    count: 0, longTasks: [], timings: [], live: null, ended: null,
  };
  window.genstreamBench = probe;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) probe.longTasks.push([e.startTime, e.duration]);
  }).observe({ type: "longtask", buffered: true });
  const timing = (list) => {
    for (const e of list.getEntries()) {
      probe.timings.push({
        type: e.entryType, name: e.name, start: e.startTime, duration: e.duration,
        processingStart: e.processingStart, processingEnd: e.processingEnd,
      });
    }
  };
  new PerformanceObserver(timing)
    .observe({ type: "event", durationThreshold: config.threshold, buffered: true });
  new PerformanceObserver(timing).observe({ type: "first-input", buffered: true });
  let figure = null;
  const frame = (at) => {
    if (probe.ended !== null || probe.count === probe.frames.length) return;
    figure = figure || document.querySelector('#figures [data-figure="events"] dd');
    probe.frames[probe.count] = at;
    probe.shown[probe.count] = figure ? Number(figure.textContent.replace(/,/g, "")) || 0 : 0;
    probe.count += 1;
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  const coverage = %(coverage)s;
  document.addEventListener("DOMContentLoaded", () => {
    const state = document.getElementById("state");
    const log = document.getElementById("log");
    const svg = document.querySelector("#timeline svg");
    if (!state || !log || !svg) return;
    const check = () => {
      const now = performance.now();
      const text = state.textContent;
      if (probe.live === null && text.startsWith("live")) {
        probe.live = now;
        report({ live: now });
      }
      if (probe.ended !== null || !/^(finished|failed|cancelled)/.test(text)) return;
      if (svg.querySelectorAll("rect.bar").length < config.bars) return;
      probe.ended = now;
      const error = document.getElementById("run-error").textContent;
      report({ ended: text, at: now, error, covered: coverage(log) });
    };
    const watch = { childList: true, characterData: true, subtree: true };
    new MutationObserver(check).observe(state, watch);
    new MutationObserver(check).observe(svg, { childList: true });
  });
})();
"""
# Two frames and 50 ms after an input: its next paint presented, its entries delivered.
SETTLE = """() => new Promise((done) =>
  requestAnimationFrame(() => requestAnimationFrame(() => setTimeout(done, 50))))"""
GATHER = """() => {
  const probe = window.genstreamBench;
  const paint = performance.getEntriesByName("first-contentful-paint")[0];
  return {
    frames: Array.from(probe.frames.subarray(0, probe.count)),
    shown: Array.from(probe.shown.subarray(0, probe.count)),
    longTasks: probe.longTasks, timings: probe.timings, live: probe.live, ended: probe.ended,
    timeOrigin: performance.timeOrigin, fcp: paint ? paint.startTime : null,
    clockSkewMs: Date.now() - (performance.timeOrigin + performance.now()),
  };
}"""


def probe(api_key: str) -> str:
    config = {
        "key": api_key,
        "prefix": REPORT_PREFIX,
        "maxFrames": MAX_FRAMES,
        "threshold": EVENT_THRESHOLD_MS,
        "bars": BARS,
    }
    return PROBE % {"config": json.dumps(config), "coverage": LOG_COVERAGE}


@dataclass(frozen=True, slots=True)
class LongTasks:
    count: int
    total_ms: float
    longest_ms: float

    @classmethod
    def within(cls, tasks: Sequence[Sequence[float]], start: float, end: float) -> LongTasks:
        spans = [duration for at, duration in tasks if start <= at < end]
        return cls(len(spans), sum(spans), max(spans, default=0.0))


@dataclass(frozen=True, slots=True)
class Interaction:
    """One click as Event Timing saw it; ``ms`` None: every entry under the threshold."""

    target: str
    ms: float | None = None
    input_delay_ms: float = math.nan
    processing_ms: float = math.nan
    presentation_ms: float = math.nan


def interactions(
    marks: Sequence[tuple[str, float]], timings: Sequence[dict[str, Any]]
) -> list[Interaction]:
    """Each click from its entries (those from its mark to the next click's): its duration is
    the longest entry's, as INP counts an interaction; input delay, the first event's wait
    for the main thread; processing, every handler of its events; then to the next paint."""
    found: list[Interaction] = []
    bounds = [at for _, at in marks[1:]] + [math.inf]
    for (target, start), end in zip(marks, bounds, strict=True):
        entries = [e for e in timings if start <= e["start"] < end and e["type"] == "event"]
        if not entries:  # all under the threshold: the tab's first input is reported anyway
            entries = [e for e in timings if start <= e["start"] < end]
        if not entries:
            found.append(Interaction(target))
            continue
        first = min(entries, key=lambda e: float(e["start"]))
        found.append(
            Interaction(
                target,
                max(float(e["duration"]) for e in entries),
                first["processingStart"] - first["start"],
                sum(e["processingEnd"] - e["processingStart"] for e in entries),
                max(e["start"] + e["duration"] for e in entries)
                - max(e["processingEnd"] for e in entries),
            )
        )
    return found


class Tab:
    """One page in a fresh context, its probe's reports as futures."""

    def __init__(self, page: Page) -> None:
        self.page = page
        loop = asyncio.get_running_loop()
        self.live: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.ended: asyncio.Future[dict[str, Any]] = loop.create_future()
        self.marks: list[tuple[str, float]] = []
        page.on("console", self._take)

    @classmethod
    async def open(cls, browser: Browser, api_key: str, url: str) -> Tab:
        context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
        try:
            await context.add_init_script(script=probe(api_key))
            tab = cls(await context.new_page())
            await tab.page.goto(url, wait_until="commit")
        except BaseException:
            await context.close()
            raise
        return tab

    def _take(self, message: ConsoleMessage) -> None:
        if not message.text.startswith(REPORT_PREFIX):
            return
        report = json.loads(message.text[len(REPORT_PREFIX) :])
        for key, future in (("live", self.live), ("ended", self.ended)):
            if key in report and not future.done():
                future.set_result(report)

    async def finished(self, events: int, timeout_s: float, what: str) -> dict[str, Any] | None:
        """The probe's report at ``finished``, checked; None if not within ``timeout_s``."""
        try:
            ended = await asyncio.wait_for(asyncio.shield(self.ended), timeout_s)
        except TimeoutError:
            return None
        if not str(ended["ended"]).startswith("finished"):
            raise RuntimeError(f"{what}: the page ended with {ended['ended']!r}: {ended['error']}")
        check_coverage(ended["covered"], events, what)
        return ended

    async def click(self, target: str, selector: str) -> None:
        """A real click (mouse events through the browser's input path), then its next paint."""
        self.marks.append((target, float(await self.page.evaluate("performance.now()"))))
        await self.page.click(selector)
        await self.page.evaluate(SETTLE)

    async def gather(self) -> dict[str, Any]:
        found: dict[str, Any] = await self.page.evaluate(GATHER)
        return found

    async def close(self) -> None:
        await self.page.context.close()
