"""Case 10: page, the web page on a long run, measured with Chromium's own performance APIs.

Debian's Chromium driven by Playwright, served by a ``serve`` subprocess; every tab a fresh
browser context running ``bench/tabs.py``'s probe (frame times, long tasks, Event Timing, and
the page's clock when ``#state`` first reads ``live``, and ``finished`` with the timeline's
bars drawn).

* **Opening** a finished run of ``SIZE`` events (quick: ``QUICK_SIZE``; case 9's shape and
  builder) at ``/#<id>``, from its snapshot, ``OPENS`` times per repetition: the
  first-contentful-paint, the time to ``finished`` with the timeline drawn, long tasks until
  then, and two clicks (Playwright's ``page.click``: real input events) on a file button in
  ``#files`` and on the theme toggle, each timed by Event Timing. A snapshot's log is one row,
  so nothing folds; the same run opened with ``?snapshot=0`` once, capped as case 9 caps it,
  gives the folded log (a fold button to click) and the reference.
* **Following** a live run of as many events, appended through the worker's path at ``RATE``
  events/s, one event per emit (a real worker emits each flushed ``llm.delta`` on its own,
  every ``delta_flush_s``: one event per emit is its honest worst case, one NOTIFY and one
  stream wake-up per event); an appender that is late (a durable commit each, on a busy
  machine) puts every event then due into its next emit, so the pace holds and the emits per
  event say how often it had to. The tab opens ``/#<id>`` once the run has its first
  ``FIRST_EVENTS`` events; the paced appends start when ``#state`` reads ``live``. Frame
  intervals from then until ``finished``, long tasks in that window, a click on the theme
  toggle halfway, and once finished a click on the first fold button (the first phase's
  stretch of model text). How far behind the page was: each frame, the age of the oldest
  event committed but not yet shown, and at the end, the terminal event's own ``timestamp``
  to the page's ``performance.timeOrigin + performance.now()`` at ``finished`` (one machine,
  one clock).

Checked: every log (opened or followed) stands for exactly events 1..N (``LOG_COVERAGE``: the
snapshot's row, then rows and folded stretches that follow each other), and the followed run
ends on ``generation.succeeded``. Without Chromium the case is skipped, with a note.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import shutil
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from playwright.async_api import Browser, async_playwright

from bench.cases.snapshot import (
    CHROMIUM_ARGS,
    PAGE_CAP_S,
    QUICK_PAGE_CAP_S,
    Run,
    make_run,
    run_events,
    vacuum,
)
from bench.core import Context, Outcome, Summary, Table, fmt_summary, percentile, row
from bench.genstream import OWNER, Serve, claimed_generations, emitters
from bench.tabs import (
    BARS,
    EVENT_THRESHOLD_MS,
    FILE_BUTTON,
    FOLD_BUTTON,
    THEME_BUTTON,
    VIEWPORT,
    Interaction,
    LongTasks,
    Tab,
    interactions,
)
from service.access import keys
from service.events import EventType
from service.store import event_log
from service.store.db import Pool, connection, create_pool
from service.store.generations import Claimed

SIZE = 10_000
QUICK_SIZE = 2_000
RATE = 500.0  # events/s appended to the followed run
OPENS = 2  # snapshot opens per repetition
FIRST_EVENTS = 3  # appended before the tab opens: started, the first phase.started, a delta
SLOW_FRAME_MS = 50.0
LIVE_TIMEOUT_S = 30.0
END_TIMEOUT_S = 60.0  # after the last append, for the followed tab to read finished
SUCCEEDED = EventType.SUCCEEDED.value


@dataclass(frozen=True, slots=True)
class OpenRead:
    fcp_ms: float
    ready_ms: float | None  # navigation start -> finished, timeline drawn; None: capped
    long_tasks: LongTasks
    rows: int
    clicks: list[Interaction]


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowRead:
    paced: int  # events appended at the pace (after the first few)
    emits: int  # the appends they took (one each, unless the appender fell behind)
    append_per_s: float  # paced events / from the pace's start to the last commit
    page_per_s: float  # paced events / from the pace's start to the page reading finished
    frames_ms: list[float]  # every frame interval from live to finished
    quarters_ms: list[list[float]]  # the same, in the window's four quarters (by time)
    behind_ms: list[float]  # per frame: how long the oldest committed event not shown waited
    end_behind_ms: float  # the terminal event's timestamp -> the page read finished
    long_tasks: LongTasks
    clicks: list[Interaction]
    clock_skew_ms: float  # Date.now() - (timeOrigin + now()) in the tab: the clocks agree?


async def terminal_timestamp(pool: Pool, run_id: UUID, seq: int) -> float:
    """The terminal event's own ``timestamp`` (as the page received it), in epoch ms."""
    async with connection(pool) as conn:
        stored = await event_log.select_events_after(conn, run_id, seq - 1, 1)
    event = json.loads(stored[0].json)
    if stored[0].seq != seq or event["type"] != SUCCEEDED:
        raise RuntimeError(f"the followed run's event {seq} is {event['type']}, not {SUCCEEDED}")
    return datetime.fromisoformat(event["timestamp"]).timestamp() * 1000


class LiveRun:
    """A run appended to through the worker's path, noting when each event was committed."""

    def __init__(self, pool: Pool, claim: Claimed, events: int) -> None:
        self.id = claim.id
        self.events = events
        self._emitter = emitters(pool, [claim])[0]
        self._planned = list(run_events(claim, events))  # seq 2..events
        self.sent = 0  # events of _planned appended so far
        self.emits = 0
        self.committed: dict[int, float] = {}  # seq -> epoch ms its emit returned

    async def emit(self, up_to: int) -> None:
        """The events before ``up_to`` not sent yet, in one append."""
        batch = self._planned[self.sent : up_to]
        await self._emitter.emit(*(e for e, _ in batch), files=[f for _, f in batch if f])
        now = time.time() * 1000
        for index in range(self.sent, up_to):
            self.committed[index + 2] = now
        self.sent, self.emits = up_to, self.emits + 1

    async def pace(self, rate: float, halfway: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Every event left, one per emit at ``rate`` (a late appender sends every event then
        due at once); ``halfway`` runs beside it from the middle on."""
        loop = asyncio.get_running_loop()
        first, total = self.sent, len(self._planned)
        started = loop.time()
        beside: asyncio.Task[None] | None = None
        while self.sent < total:
            if beside is None and self.sent >= (first + total) // 2:
                beside = asyncio.create_task(halfway())
            due = min(total, first + math.floor((loop.time() - started) * rate) + 1)
            if due <= self.sent:
                await asyncio.sleep(started + (self.sent - first) / rate - loop.time())
                continue
            await self.emit(due)
        if beside is not None:
            await beside


@dataclass(frozen=True, slots=True)
class Pages:
    """Tabs of one browser on one ``serve``, signed in as the runs' owner."""

    browser: Browser
    base_url: str
    api_key: str
    pool: Pool

    async def open_finished(self, run: Run, snapshot: bool, cap_s: float) -> OpenRead:
        url = f"{self.base_url}/#{run.id}" if snapshot else f"{self.base_url}/?snapshot=0#{run.id}"
        tab = await Tab.open(self.browser, self.api_key, url)
        try:
            what = f"a {'snapshot' if snapshot else 'full replay'} open"
            ended = await tab.finished(run.events, cap_s, what)
            if ended is None:
                found = await tab.gather()
                tasks = LongTasks.within(found["longTasks"], 0, math.inf)
                return OpenRead(found["fcp"] or math.nan, None, tasks, 0, [])
            for target, selector in (
                [("file", FILE_BUTTON), ("theme", THEME_BUTTON)]
                if snapshot
                else [("fold", FOLD_BUTTON), ("file", FILE_BUTTON)]
            ):
                await tab.click(target, selector)
            found = await tab.gather()
        finally:
            await tab.close()
        at = float(ended["at"])
        return OpenRead(
            found["fcp"],
            at,
            LongTasks.within(found["longTasks"], 0, at),
            int(ended["covered"]["rows"]),
            interactions(tab.marks, found["timings"]),
        )

    async def follow_live(self, events: int) -> FollowRead:
        """A live run followed by a tab; see the module's docstring."""
        run = LiveRun(self.pool, (await claimed_generations(self.pool, 1))[0], events)
        for index in range(FIRST_EVENTS):
            await run.emit(index + 1)
        tab = await Tab.open(self.browser, self.api_key, f"{self.base_url}/#{run.id}")
        try:
            live_at = float((await asyncio.wait_for(tab.live, LIVE_TIMEOUT_S))["live"])
            paced, started_ms = run.events - 1 - run.sent, time.time() * 1000
            await run.pace(RATE, lambda: tab.click("theme, mid-stream", THEME_BUTTON))
            ended = await tab.finished(events, END_TIMEOUT_S, "the followed tab")
            if ended is None:
                raise RuntimeError(f"the followed tab did not finish in {END_TIMEOUT_S:g} s")
            await tab.click("fold, after the end", FOLD_BUTTON)
            found = await tab.gather()
        finally:
            await tab.close()
        end_ms = await terminal_timestamp(self.pool, run.id, events)
        origin, ended_at = float(found["timeOrigin"]), float(ended["at"])
        window = [
            (at, shown)
            for at, shown in zip(found["frames"], found["shown"], strict=True)
            if live_at <= at <= ended_at
        ]
        frames = [at for at, _ in window]

        def quarter(at: float) -> int:
            return min(3, int(4 * (at - live_at) / (ended_at - live_at)))

        behind = []
        for at, shown in window:
            if not shown:
                continue  # the run not drawn yet: still opening (what the opens measure)
            waiting = run.committed.get(shown + 1)  # the oldest event not shown, if committed
            behind.append(max(0.0, origin + at - waiting) if waiting is not None else 0.0)
        return FollowRead(
            paced=paced,
            emits=run.emits - FIRST_EVENTS,
            append_per_s=paced / ((run.committed[events] - started_ms) / 1000),
            page_per_s=paced / ((origin + ended_at - started_ms) / 1000),
            frames_ms=[b - a for a, b in itertools.pairwise(frames)],
            quarters_ms=[
                [b - a for a, b in itertools.pairwise(frames) if quarter(b) == number]
                for number in range(4)
            ],
            behind_ms=behind,
            end_behind_ms=origin + ended_at - end_ms,
            long_tasks=LongTasks.within(found["longTasks"], live_at, ended_at),
            clicks=interactions(tab.marks, found["timings"]),
            clock_skew_ms=float(found["clockSkewMs"]),
        )


async def run(ctx: Context) -> Outcome:
    events = QUICK_SIZE if ctx.quick else SIZE
    cap_s = QUICK_PAGE_CAP_S if ctx.quick else PAGE_CAP_S
    chromium = shutil.which("chromium")
    outcome = Outcome(
        parameters={
            "events": events,
            "rate_per_s": RATE,
            "events_per_emit": "1; when the appender is late, every event then due",
            "snapshot_opens": OPENS * ctx.repeat,
            "replay_cap_s": cap_s,
            "viewport": VIEWPORT,
            "event_timing_threshold_ms": EVENT_THRESHOLD_MS,
            "browser": chromium,
        }
    )
    if chromium is None:
        outcome.status, outcome.reason = "skipped", "no chromium on PATH (`make browser`)"
        outcome.notes.append("the page was not measured: no chromium on PATH (`make browser`)")
        return outcome
    opens: list[OpenRead] = []
    follows: list[FollowRead] = []
    # serve starts (seconds of imports) while the browser starts and the run is written.
    starting = asyncio.create_task(Serve.start(ctx.database_url, ctx.work_dir))
    pool: Pool | None = None
    try:
        pool = await create_pool(ctx.database_url, min_size=1, max_size=2)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                outcome.parameters["browser"] = f"Chromium {browser.version}"
                finished = await make_run(ctx.database_url, events)
                await vacuum(ctx.database_url)
                api_key = await keys.create_key(pool, OWNER)  # the page's: the runs are OWNER's
                pages = Pages(browser, (await starting).server.base_url, api_key, pool)
                if not ctx.quick:  # unmeasured: serve's first snapshot, the first renderer
                    await pages.open_finished(finished, True, cap_s)
                replay = await pages.open_finished(finished, False, cap_s)
                for _ in ctx.reps():
                    for _ in range(OPENS):
                        opens.append(await pages.open_finished(finished, True, cap_s))
                    follows.append(await pages.follow_live(events))
            finally:
                await browser.close()
    finally:
        if pool is not None:
            await pool.close()
        await asyncio.wait([starting])
        if not starting.cancelled() and starting.exception() is None:
            await starting.result().stop()
    _report(outcome, finished, opens, replay, follows, cap_s)
    return outcome


def _counted(values: Sequence[float]) -> str:
    summary = Summary.of(values)
    cell = f"{summary.median:,.0f}"
    return cell if summary.min == summary.max else f"{cell} ({summary.min:,.0f}-{summary.max:,.0f})"


def _ms(values: Sequence[float]) -> str:
    return fmt_summary(Summary.of(values)) if values else "n/a"


def _report(
    outcome: Outcome,
    finished: Run,
    opens: Sequence[OpenRead],
    replay: OpenRead,
    follows: Sequence[FollowRead],
    cap_s: float,
) -> None:
    opened = Table(
        f"Opening a finished {finished.events:,}-event run, a fresh context per tab "
        "(ms from navigation start; median (min-max) over tabs)",
        [
            "open",
            "tabs",
            "first contentful paint",
            "finished, timeline drawn",
            "long tasks",
            "long tasks' total",
            "longest task",
            "#log rows",
        ],
    )
    for label, mode, reads in (
        ("snapshot (`/#id`)", "snapshot", opens),
        ("full replay (`?snapshot=0`)", "full", [replay]),
    ):
        ready = [read.ready_ms for read in reads if read.ready_ms is not None]
        capped = len(ready) < len(reads)
        tasks = [read.long_tasks for read in reads]
        opened.add(
            label,
            str(len(reads)),
            _ms([read.fcp_ms for read in reads]),
            f"> {cap_s * 1000:,.0f}" if capped else _ms(ready),
            _counted([task.count for task in tasks]),
            _ms([task.total_ms for task in tasks]),
            _ms([task.longest_ms for task in tasks]),
            "" if capped else _counted([read.rows for read in reads]),
        )
        metrics: dict[str, Summary | float | int | str] = {
            "fcp_ms": Summary.of([read.fcp_ms for read in reads]),
            "long_tasks": Summary.of([task.count for task in tasks]),
            "long_tasks_ms": Summary.of([task.total_ms for task in tasks]),
            "longest_task_ms": Summary.of([task.longest_ms for task in tasks]),
        }
        if capped:
            metrics["capped_at_ms"] = cap_s * 1000
        else:
            metrics["ready_ms"] = Summary.of(ready)
            metrics["log_rows"] = Summary.of([read.rows for read in reads])
        outcome.rows.append(row({"events": finished.events, "open": mode}, **metrics))
    outcome.tables.append(opened)

    clicked = Table(
        "Clicks, as Event Timing measured them (ms; duration: from the input to the next "
        "paint, as INP counts a click; processing: every handler of its events; median "
        "(min-max))",
        ["tab", "click", "clicks", "duration", "input delay", "processing", "to next paint"],
    )
    groups: dict[tuple[str, str], list[Interaction]] = {}
    for tab, tabs in (
        ("snapshot open", [read.clicks for read in opens]),
        ("full replay", [replay.clicks]),
        ("following live", [read.clicks for read in follows]),
    ):
        for tab_clicks in tabs:
            for click in tab_clicks:
                groups.setdefault((tab, click.target), []).append(click)
    for (tab, target), clicks in groups.items():
        timed = [click for click in clicks if click.ms is not None]
        under = len(clicks) - len(timed)
        duration = _ms([click.ms for click in timed if click.ms is not None])
        if not timed:
            duration = f"< {EVENT_THRESHOLD_MS}"
        elif under:
            duration += f"; {under} < {EVENT_THRESHOLD_MS}"
        clicked.add(
            tab,
            target,
            str(len(clicks)),
            duration,
            _ms([click.input_delay_ms for click in timed]),
            _ms([click.processing_ms for click in timed]),
            _ms([click.presentation_ms for click in timed]),
        )
        metrics = {"clicks": len(clicks), "under_threshold": under}
        if timed:
            metrics["duration_ms"] = Summary.of([c.ms for c in timed if c.ms is not None])
            metrics["processing_ms"] = Summary.of([click.processing_ms for click in timed])
        outcome.rows.append(row({"tab": tab, "click": target}, **metrics))
    outcome.tables.append(clicked)

    if follows:
        _report_follows(outcome, finished.events, follows)
    shape = (
        f"{finished.deltas:,} llm.delta ({finished.deltas / finished.events:.1%}), "
        f"{finished.files} file.saved, {finished.model_chars:,} characters of model text"
    )
    outcome.notes.extend(
        [
            f"the runs: case 9's shape (queued, started, 4 phases, succeeded): {shape}.",
            "machine: 2 cores shared by PostgreSQL (durable commits), serve, the bench's "
            "appender and Playwright's driver, and Chromium's browser, renderer and "
            "compositor (software, --disable-gpu); the load average at the start is in the "
            "JSON. Frame times are what this page gets on such a machine, not on a desktop.",
            "finished, timeline drawn: the tab's performance.now() when #state first read "
            f"`finished` with the timeline's {BARS} bars in its SVG (MutationObservers, in the "
            "same task as the draw, before its paint); long tasks (> 50 ms, PerformanceObserver "
            "`longtask`) from navigation start until then.",
            "clicks: Playwright's page.click (trusted mouse events through the browser's input "
            "path) once the tab is idle (mid-stream: while it follows); Event Timing rounds "
            f"durations to 8 ms and reports only those of {EVENT_THRESHOLD_MS} ms or more, but "
            f"a tab's first input always (`first-input`): `< {EVENT_THRESHOLD_MS}` says no "
            "entry was. A snapshot's log is one row, so nothing to fold there: the fold is "
            f"clicked in the replay and in the followed tab (the first phase's stretch of "
            "model text, a row per llm.delta inserted).",
        ]
    )
    skew = max((abs(read.clock_skew_ms) for read in follows), default=0.0)
    outcome.parameters["max_clock_skew_ms"] = skew
    if skew > 5:
        outcome.notes.append(
            f"the tab's timeOrigin + now() was {skew:.1f} ms off Date.now(): 'behind at the "
            "end' is off by as much"
        )


def _report_follows(outcome: Outcome, events: int, follows: Sequence[FollowRead]) -> None:
    def dist(values: Sequence[float]) -> tuple[float, float, float, float]:
        ordered = sorted(values)
        return (
            percentile(ordered, 50),
            percentile(ordered, 95),
            percentile(ordered, 99),
            ordered[-1] if ordered else math.nan,
        )

    frames = [dist(read.frames_ms) for read in follows]
    behind = [dist(read.behind_ms) for read in follows]
    figures: list[tuple[str, str, list[float]]] = [
        (
            "append_events_per_s",
            "events appended /s",
            [r.append_per_s for r in follows],
        ),
        ("page_events_per_s", "events the page drew /s", [r.page_per_s for r in follows]),
        ("events_per_emit", "events per emit", [r.paced / r.emits for r in follows]),
        ("frames", "frames, live to finished", [float(len(r.frames_ms)) for r in follows]),
        ("p50_ms", "frame time p50 (ms)", [f[0] for f in frames]),
        ("p95_ms", "frame time p95 (ms)", [f[1] for f in frames]),
        ("p99_ms", "frame time p99 (ms)", [f[2] for f in frames]),
        ("max_ms", "frame time max (ms)", [f[3] for f in frames]),
        (
            "p95_first_quarter_ms",
            "frame time p95, first quarter of the run (ms)",
            [dist(r.quarters_ms[0])[1] for r in follows],
        ),
        (
            "p95_last_quarter_ms",
            "frame time p95, last quarter of the run (ms)",
            [dist(r.quarters_ms[3])[1] for r in follows],
        ),
        (
            "slow_frame_share",
            f"frames over {SLOW_FRAME_MS:g} ms",
            [sum(1 for f in r.frames_ms if f > SLOW_FRAME_MS) / len(r.frames_ms) for r in follows],
        ),
        ("long_tasks", "long tasks", [float(r.long_tasks.count) for r in follows]),
        ("long_tasks_ms", "long tasks' total (ms)", [r.long_tasks.total_ms for r in follows]),
        ("longest_task_ms", "longest task (ms)", [r.long_tasks.longest_ms for r in follows]),
        ("behind_p50_ms", "behind, per frame, p50 (ms)", [b[0] for b in behind]),
        ("behind_p99_ms", "behind, per frame, p99 (ms)", [b[2] for b in behind]),
        ("behind_max_ms", "behind, per frame, max (ms)", [b[3] for b in behind]),
        ("end_behind_ms", "behind at the end (ms)", [r.end_behind_ms for r in follows]),
    ]
    table = Table(
        f"Following a live {events:,}-event run appended at {RATE:,.0f} events/s "
        "(median (min-max) over repetitions)",
        ["figure", "value"],
    )
    metrics: dict[str, Summary | float | int | str] = {}
    for name, label, values in figures:
        summary = Summary.of(values)
        metrics[name] = summary
        if name == "slow_frame_share":
            cell = f"{summary.median:.1%}"
            if summary.min != summary.max:
                cell += f" ({summary.min:.1%}-{summary.max:.1%})"
        elif name in ("frames", "long_tasks"):
            cell = _counted(values)
        else:
            cell = fmt_summary(summary)
        table.add(label, cell)
    outcome.rows.append(row({"events": events, "rate_per_s": RATE}, **metrics))
    outcome.tables.append(table)
    outcome.notes.append(
        "following: frame times are the intervals between requestAnimationFrame timestamps "
        "from #state reading `live` (the paced appends start then) to `finished`, the "
        "quarters by time; behind, per frame: how long the oldest event committed but not yet "
        "shown (the `events` figure) had waited, 0 when the page showed everything committed, "
        "from the first frame showing the run; behind at the end: the "
        "terminal event's own timestamp to the tab's timeOrigin + now() at `finished`; "
        "events drawn /s: the paced events over the time from the pace's start to `finished`."
    )
