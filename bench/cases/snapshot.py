"""Case 9: snapshot, opening a finished run from its snapshot beside replaying every event.

``GET /api/generations/{id}/stream?snapshot=1`` sends one ``event: snapshot`` frame, the run
reduced up to its last event, instead of the events it stands for; the web page opens a run
that way unless its address says ``?snapshot=0``. What that buys grows with the run, so three
finished runs of 100, 10,000 and 100,000 events (quick: 100 and 2,000), each shaped like a real
one: ``generation.queued`` and ``generation.started``, four phases of ``phase.started``, many
``llm.delta`` of about 20 characters of code, the phase's ``file.saved`` (the files stored with
them) and ``phase.completed``, then ``generation.succeeded``; appended through the worker's
path in batches. For each run, snapshot vs full replay, interleaved, the order alternating:

* **over SSE**: a ``serve`` subprocess and an httpx client reading the whole stream (a
  finished run's stream ends by itself): response body bytes and the time to its end. Checked:
  the replay is ids 1..N in order ending on ``generation.succeeded``; the snapshot stream is
  one frame, ``event: snapshot``, id N, whose JSON says seq N and that its last event is
  ``generation.succeeded``.
* **in the page**: Debian's Chromium driven by Playwright opens ``/#<id>`` or
  ``/?snapshot=0#<id>`` in a fresh tab, the API key in its localStorage: the page's own clock
  (``performance.now()``, from navigation start) when ``#state`` first reads ``finished``,
  noted by a MutationObserver on ``#state`` as it changes (not by polling, which would be late
  by up to its interval), and the ``#log`` rows drawn then (the snapshot's one row, or one per
  event with each stretch of ``llm.delta`` folded into one). A tab not finished after
  ``PAGE_CAP_S`` (quick: ``QUICK_PAGE_CAP_S``) is reported as more than that, with the rows it
  had drawn by then, and that run and mode is not opened again in later repetitions (it would
  only hit the cap again). Checked: the log stands for exactly events 1..N (``LOG_COVERAGE``).

Without Chromium (``make browser``) the SSE half still runs and a note says the page was not
measured.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import asyncpg
import httpx
from playwright.async_api import BrowserContext, ConsoleMessage, async_playwright

from bench.core import Context, Outcome, Summary, Table, fmt_number, fmt_summary, ratio, row
from bench.genstream import OWNER, SPEC, Serve, claimed_generations, emitters
from bench.sse import Frame, FrameParser
from bench.tabs import LOG_COVERAGE, check_coverage
from service.access import keys
from service.events import (
    DeltaData,
    EventType,
    NewEvent,
    NewFile,
    PhaseCompletedData,
    PhaseStartedData,
    StartedData,
    SucceededData,
)
from service.generation.phases import PHASES, STARTED
from service.generation.providers.offline import render_phase
from service.generation.verification import not_verified
from service.spec import Spec
from service.store.db import asyncpg_dsn, create_pool
from service.store.generations import Claimed

Mode = Literal["snapshot", "full"]
MODES: tuple[Mode, ...] = ("snapshot", "full")
MODE_LABELS: dict[Mode, str] = {"snapshot": "snapshot", "full": "full replay"}

SIZES = (100, 10_000, 100_000)
QUICK_SIZES = (100, 2_000)
LOAD_BATCH = 1000
DELTA_CHARS = 20  # what a model's streamed chunk holds, about
# Below this many events a run saves only the first file of each phase (4 instead of the
# offline project's 15), so that deltas stay the bulk of even a 100-event run.
ALL_FILES_FROM = 1000
PAGE_CAP_S = 120.0
# A replay in the page is slow enough (thousands of events take tens of seconds) that --quick
# caps it sooner, to stay a smoke run; the 100-event run still finishes within it.
QUICK_PAGE_CAP_S = 5.0
STREAM_TIMEOUT_S = 300.0
# As tests/web/browser.py launches it (the bench does not import the tests).
CHROMIUM_ARGS = [
    "--no-sandbox",  # required as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SUCCEEDED = EventType.SUCCEEDED.value

# Runs in every document of the browser context before its own scripts: the API key where the
# page looks for it, and two MutationObservers registered before app.js's own DOMContentLoaded
# listener, so they are in place before the page opens the run. They report on the console,
# which reaches Playwright while the tab's main thread is busy (an evaluate would wait for it):
# the page's clock and the #log rows the moment #state first shows a terminal state, and the
# rows drawn so far every ROWS_EVERY_MS while rows are added.
PAGE_SETUP = """
(() => {
  try { localStorage.setItem("genstream.apiKey", %(key)s); } catch (_) { return; }
  const report = (what) => console.debug(%(prefix)s + JSON.stringify(what));
  document.addEventListener("DOMContentLoaded", () => {
    const state = document.getElementById("state");
    const log = document.getElementById("log");
    if (!state || !log) return;
    let ended = false;
    let reported = 0;
    new MutationObserver(() => {
      const text = state.textContent;
      if (ended || !/^(finished|failed|cancelled)/.test(text)) return;
      ended = true;
      const error = document.getElementById("run-error").textContent;
      const covered = (%(coverage)s)(log);
      report({ ended: text, at: performance.now(), rows: log.childElementCount, error, covered });
    }).observe(state, { childList: true, characterData: true, subtree: true });
    new MutationObserver(() => {
      const now = performance.now();
      if (now - reported < %(every)d) return;
      reported = now;
      report({ rows: log.childElementCount, at: now });
    }).observe(log, { childList: true });
  });
})();
"""
REPORT_PREFIX = "genstream-bench "
ROWS_EVERY_MS = 250


def page_setup(api_key: str) -> str:
    return PAGE_SETUP % {
        "key": json.dumps(api_key),
        "prefix": json.dumps(REPORT_PREFIX),
        "every": ROWS_EVERY_MS,
        "coverage": LOG_COVERAGE,
    }


@dataclass(frozen=True, slots=True)
class Run:
    id: UUID
    events: int
    deltas: int
    files: int
    model_chars: int


def project_files(events: int) -> list[list[NewFile]]:
    """The offline provider's project for the bench's spec, phase by phase."""
    spec = Spec.model_validate(SPEC)
    files = [render_phase(spec, phase.stage) for phase in PHASES]
    return files if events >= ALL_FILES_FROM else [phase_files[:1] for phase_files in files]


def run_events(claim: Claimed, events: int) -> Iterator[tuple[NewEvent, NewFile | None]]:
    """Events 2..``events`` of a run (seq 1, ``generation.queued``, is stored by the claim),
    each with the file it announces. The model's text is the project's own code, cut into
    ``DELTA_CHARS`` pieces and repeated as long as needed: code's newlines and quotes, so
    its JSON escapes as a real run's does."""
    files = project_files(events)
    saved = sum(len(phase_files) for phase_files in files)
    deltas = events - 2 - 2 * len(PHASES) - saved - 1
    if deltas < len(PHASES):
        raise ValueError(f"{events} events are too few for a run of {len(PHASES)} phases")
    code = "".join(file.content for phase_files in files for file in phase_files)
    looped = code + code[:DELTA_CHARS]
    provider, model = claim.provider, claim.model
    yield (
        NewEvent(
            EventType.STARTED,
            "starting",
            STARTED,
            f"Started with the {provider} provider",
            StartedData(
                worker="bench-snapshot", attempt=claim.attempt, provider=provider, model=model
            ),
        ),
        None,
    )
    written = 0
    for index, phase in enumerate(PHASES):
        start, end = phase.span
        count = deltas // len(PHASES) + (1 if index < deltas % len(PHASES) else 0)
        yield (
            NewEvent(
                EventType.PHASE_STARTED,
                phase.stage,
                start,
                f"Phase {phase.number} of {len(PHASES)}: {phase.title}",
                PhaseStartedData(
                    phase=phase.stage,
                    number=phase.number,
                    of=len(PHASES),
                    attempt=1,
                    provider=provider,
                    model=model,
                ),
            ),
            None,
        )
        writing = f"Writing {phase.title.lower()}"
        for number in range(count):
            offset = (written * DELTA_CHARS) % len(code)
            written += 1
            text = looped[offset : offset + DELTA_CHARS]
            progress = round(start + (end - start) * 0.9 * (number + 1) / count, 4)
            data = DeltaData(phase=phase.stage, attempt=1, text=text)
            yield NewEvent(EventType.LLM_DELTA, phase.stage, progress, writing, data), None
        saved_at = round(start + (end - start) * 0.95, 4)
        for file in files[index]:
            yield file.saved(phase.stage, saved_at), file
        yield (
            NewEvent(
                EventType.PHASE_COMPLETED,
                phase.stage,
                end,
                f"{phase.title} done: {len(files[index])} file"
                + ("" if len(files[index]) == 1 else "s"),
                PhaseCompletedData(
                    phase=phase.stage,
                    files=len(files[index]),
                    attempts=1,
                    prompt_tokens=1200,
                    output_tokens=count * 5,
                    duration_ms=count * 20,
                    provider=provider,
                    model=model,
                ),
            ),
            None,
        )
    yield (
        NewEvent(
            EventType.SUCCEEDED,
            "done",
            1.0,
            "Generation finished",
            SucceededData(verification=not_verified()),
        ),
        None,
    )


async def make_run(database_url: str, events: int) -> Run:
    """A finished run of exactly ``events`` events, appended through the worker's path in
    batches of ``LOAD_BATCH`` (each ``file.saved`` with its file, as the generator stores
    them), owned by the bench's owner."""
    pool = await create_pool(database_url, min_size=1, max_size=2)
    try:
        claim = (await claimed_generations(pool, 1))[0]
        emitter = emitters(pool, [claim])[0]
        batch: list[NewEvent] = []
        batch_files: list[NewFile] = []
        deltas = files = model_chars = 0
        for event, file in run_events(claim, events):
            batch.append(event)
            if file is not None:
                batch_files.append(file)
                files += 1
            if event.type is EventType.LLM_DELTA:
                deltas += 1
                model_chars += len(event.data["text"])
            if len(batch) == LOAD_BATCH:
                await emitter.emit(*batch, files=batch_files)
                batch, batch_files = [], []
        if batch:
            await emitter.emit(*batch, files=batch_files)
    finally:
        await pool.close()
    return Run(claim.id, events, deltas, files, model_chars)


async def vacuum(database_url: str) -> None:
    """Hint bits and the visibility map set now, so that no reader pays for them."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute("VACUUM (ANALYZE) generation_events")
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class StreamRead:
    bytes: int  # the response body: what the server wrote, retry hint included
    ms: float  # from the request to the end of the stream


async def read_stream(serve: Serve, run: Run, mode: Mode) -> StreamRead:
    """The whole stream of a finished run, checked (see the module's docstring)."""
    path = serve.stream_path(run.id, 0) + ("&snapshot=1" if mode == "snapshot" else "")
    parser = FrameParser()
    size = count = last_seq = 0
    in_order = True
    last: Frame | None = None
    async with httpx.AsyncClient(
        base_url=serve.server.base_url, timeout=httpx.Timeout(STREAM_TIMEOUT_S)
    ) as client:
        started = time.perf_counter()
        async with client.stream("GET", path) as response:
            if response.status_code != 200:
                await response.aread()
                raise RuntimeError(f"stream answered {response.status_code}: {response.text}")
            async for chunk in response.aiter_raw():
                size += len(chunk)
                for frame in parser.feed(chunk):
                    if frame.id is None:
                        continue  # the retry hint
                    seq = int(frame.id)
                    in_order = in_order and seq == last_seq + 1
                    last_seq, last = seq, frame
                    count += 1
        elapsed_ms = (time.perf_counter() - started) * 1000
    if last is None or last.data is None:
        raise RuntimeError(f"the {mode} stream of a {run.events}-event run sent no event")
    data = json.loads(last.data)
    if mode == "full":
        if not in_order or count != run.events or last.event != SUCCEEDED.encode():
            raise RuntimeError(
                f"full replay: {count} of {run.events} events (in order: {in_order}), "
                f"ending with {last.event!r}"
            )
        if data["seq"] != run.events:
            raise RuntimeError(f"full replay: the last frame's JSON says seq {data['seq']}")
    elif (
        count != 1
        or last.event != b"snapshot"
        or last_seq != run.events
        or data["seq"] != run.events
        or data["last_event"]["type"] != SUCCEEDED
    ):
        raise RuntimeError(
            f"snapshot stream: {count} frame(s), the last {last.event!r} id {last_seq}, seq "
            f"{data.get('seq')}, last event {data.get('last_event', {}).get('type')!r}; "
            f"expected one snapshot frame, id and seq {run.events}, ending on {SUCCEEDED}"
        )
    return StreamRead(size, elapsed_ms)


@dataclass(frozen=True, slots=True)
class PageRead:
    ms: float | None  # navigation start -> #state reads "finished"; None: not within the cap
    rows: int  # #log rows drawn then (or at the cap)


def page_url(base_url: str, run: Run, mode: Mode) -> str:
    return f"{base_url}/#{run.id}" if mode == "snapshot" else f"{base_url}/?snapshot=0#{run.id}"


class _Reports:
    """What one tab reported on its console (see ``PAGE_SETUP``)."""

    def __init__(self) -> None:
        self.ended: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.rows = 0

    def take(self, message: ConsoleMessage) -> None:
        if not message.text.startswith(REPORT_PREFIX):
            return
        report = json.loads(message.text[len(REPORT_PREFIX) :])
        self.rows = max(self.rows, int(report["rows"]))
        if "ended" in report and not self.ended.done():
            self.ended.set_result(report)


async def open_page(
    context: BrowserContext, base_url: str, run: Run, mode: Mode, cap_s: float
) -> PageRead:
    """One fresh tab opening the run; see the module's docstring. Its time is the tab's own
    clock; ``cap_s`` is counted here from just before the navigation."""
    page = await context.new_page()
    reports = _Reports()
    page.on("console", reports.take)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await page.goto(page_url(base_url, run, mode), wait_until="commit")
        try:
            async with asyncio.timeout_at(started + cap_s):
                ended = await reports.ended
        except TimeoutError:
            return PageRead(None, reports.rows)
        if not str(ended["ended"]).startswith("finished"):
            raise RuntimeError(
                f"the page ended a {mode} open with {ended['ended']!r}: {ended['error']}"
            )
        check_coverage(ended["covered"], run.events, f"a {mode} open")
        return PageRead(float(ended["at"]), int(ended["rows"]))
    finally:
        await page.close()


def alternating(rep: int) -> Sequence[Mode]:
    return MODES if rep % 2 == 0 else MODES[::-1]


def _page_cells(reads: Sequence[PageRead], cap_s: float) -> tuple[str, str]:
    """The page-time and rows cells: a figure when every open finished, else the cap."""
    if not reads:
        return "not measured", ""
    capped = [read.rows for read in reads if read.ms is None]
    if capped:
        return f"> {cap_s * 1000:,.0f}", f"{statistics.median(capped):,.0f} at {cap_s:g} s"
    times = Summary.of([read.ms for read in reads if read.ms is not None])
    rows = Summary.of([read.rows for read in reads])
    counted = f"{rows.median:,.0f}"  # rows are counts: no significant digits to show
    if rows.min != rows.max:
        counted += f" ({rows.min:,.0f}-{rows.max:,.0f})"
    return fmt_summary(times), counted


def _page_metrics(
    reads: Sequence[PageRead], cap_s: float
) -> dict[str, Summary | float | int | str]:
    finished = [read.ms for read in reads if read.ms is not None]
    capped = [read.rows for read in reads if read.ms is None]
    metrics: dict[str, Summary | float | int | str] = {}
    if finished:
        metrics["page_ms"] = Summary.of(finished)
        metrics["page_log_rows"] = Summary.of([read.rows for read in reads if read.ms is not None])
    if capped:
        metrics["page_capped"] = len(capped)
        metrics["page_cap_ms"] = cap_s * 1000
        metrics["page_log_rows_at_cap"] = Summary.of(capped)
    return metrics


async def run(ctx: Context) -> Outcome:
    sizes = QUICK_SIZES if ctx.quick else SIZES
    cap_s = QUICK_PAGE_CAP_S if ctx.quick else PAGE_CAP_S
    chromium = shutil.which("chromium")
    outcome = Outcome(
        parameters={
            "sizes": list(sizes),
            "delta_chars": DELTA_CHARS,
            "page_cap_s": cap_s,
            "client": f"httpx {httpx.__version__}, aiter_raw + frame split",
            "browser": chromium,
        }
    )
    runs = [await make_run(ctx.database_url, events) for events in sizes]
    await vacuum(ctx.database_url)
    pool = await create_pool(ctx.database_url, min_size=1, max_size=1)
    try:
        api_key = await keys.create_key(pool, OWNER)  # the page's: the runs are OWNER's
    finally:
        await pool.close()

    streams: dict[tuple[int, Mode], list[StreamRead]] = {
        (each.events, mode): [] for each in runs for mode in MODES
    }
    pages: dict[tuple[int, Mode], list[PageRead]] = {
        (each.events, mode): [] for each in runs for mode in MODES
    }
    serve = await Serve.start(ctx.database_url, ctx.work_dir)
    try:
        for each in runs:  # one unmeasured read of each: caches, prepared statements
            for mode in MODES:
                await read_stream(serve, each, mode)
        for rep in ctx.reps():
            for each in runs:
                for mode in alternating(rep):
                    streams[each.events, mode].append(await read_stream(serve, each, mode))
        if chromium is not None:
            tabs = Tabs(serve.server.base_url, api_key, cap_s)
            outcome.parameters["browser"] = await tabs.measure(chromium, runs, pages, ctx)
    finally:
        await serve.stop()

    _report(outcome, runs, streams, pages, cap_s)
    if chromium is None:
        outcome.notes.append("the page was not measured: no chromium on PATH (`make browser`)")
    return outcome


@dataclass(frozen=True, slots=True)
class Tabs:
    base_url: str
    api_key: str
    cap_s: float

    async def measure(
        self,
        chromium: str,
        runs: Sequence[Run],
        pages: dict[tuple[int, Mode], list[PageRead]],
        ctx: Context,
    ) -> str:
        """Every run in both modes, a fresh tab each, into ``pages``; the browser's version.
        One browser and context throughout: the page's files are cached after the first tab,
        as for anyone opening a second run."""
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                context = await browser.new_context(viewport={"width": 1200, "height": 1000})
                await context.add_init_script(script=page_setup(self.api_key))
                # Unmeasured: the renderer's start, the page's scripts compiled and cached.
                for mode in MODES:
                    await open_page(context, self.base_url, runs[0], mode, self.cap_s)
                for rep in ctx.reps():
                    for each in runs:
                        for mode in alternating(rep):
                            done = pages[each.events, mode]
                            if any(read.ms is None for read in done):
                                continue  # it hit the cap once: it would again
                            read = await open_page(context, self.base_url, each, mode, self.cap_s)
                            done.append(read)
                return f"Chromium {browser.version}"
            finally:
                await browser.close()


def _report(
    outcome: Outcome,
    runs: Sequence[Run],
    streams: dict[tuple[int, Mode], list[StreamRead]],
    pages: dict[tuple[int, Mode], list[PageRead]],
    cap_s: float,
) -> None:
    table = Table(
        "Opening a finished run: snapshot vs full replay (median (min-max) over repetitions)",
        [
            "events",
            "mode",
            "bytes sent",
            "stream to end (ms)",
            "page to finished (ms)",
            "#log rows drawn",
            "bytes full/snapshot",
            "stream full/snapshot",
            "page full/snapshot",
        ],
    )
    for each in runs:
        snap_streams, full_streams = streams[each.events, "snapshot"], streams[each.events, "full"]
        bytes_ratio = ratio(
            [float(read.bytes) for read in full_streams],
            [float(read.bytes) for read in snap_streams],
        )
        stream_ratio = ratio([read.ms for read in full_streams], [read.ms for read in snap_streams])
        full_pages = pages[each.events, "full"]
        snap_page_ms = [read.ms for read in pages[each.events, "snapshot"] if read.ms is not None]
        full_page_ms = [read.ms for read in full_pages if read.ms is not None]
        page_ratio: Summary | None = None
        page_ratio_cell = ""
        if snap_page_ms and len(snap_page_ms) == len(full_page_ms) == len(full_pages):
            page_ratio = ratio(full_page_ms, snap_page_ms)
            page_ratio_cell = fmt_summary(page_ratio)
        elif snap_page_ms and len(full_page_ms) < len(full_pages):
            bound = cap_s * 1000 / statistics.median(snap_page_ms)
            page_ratio_cell = f"> {fmt_number(bound)}"
        for mode in MODES:
            reads = streams[each.events, mode]
            size = Summary.of([float(read.bytes) for read in reads])
            elapsed = Summary.of([read.ms for read in reads])
            page_cell, rows_cell = _page_cells(pages[each.events, mode], cap_s)
            full = mode == "full"
            table.add(
                f"{each.events:,}",
                MODE_LABELS[mode],
                fmt_summary(size),
                fmt_summary(elapsed),
                page_cell,
                rows_cell,
                fmt_summary(bytes_ratio) if full else "",
                fmt_summary(stream_ratio) if full else "",
                page_ratio_cell if full else "",
            )
            metrics: dict[str, Summary | float | int | str] = {
                "bytes": size,
                "stream_ms": elapsed,
                **_page_metrics(pages[each.events, mode], cap_s),
            }
            if full:
                metrics["ratio_bytes_full_to_snapshot"] = bytes_ratio
                metrics["ratio_stream_ms_full_to_snapshot"] = stream_ratio
                if page_ratio is not None:
                    metrics["ratio_page_ms_full_to_snapshot"] = page_ratio
            outcome.rows.append(row({"events": each.events, "mode": mode}, **metrics))
    outcome.tables.append(table)
    shapes = "; ".join(
        f"{each.events:,}: {each.deltas:,} llm.delta ({each.deltas / each.events:.1%}), "
        f"{each.files} file.saved, {each.model_chars:,} characters of model text"
        for each in runs
    )
    outcome.notes.append(
        f"the runs (queued, started, 4 phases, succeeded): {shapes}. The snapshot carries the "
        "last 4,000 characters of the model's text, the phases, the files and the counts."
    )
    outcome.notes.append(
        "bytes sent: the stream's response body (headers aside), the same bytes the page's "
        "EventSource receives; stream to end: an httpx client on the same machine, from the "
        "request to the end the server gives a finished run's stream."
    )
    outcome.notes.append(
        "page to finished: the tab's performance.now() (from navigation start: the page, its "
        "scripts, a stream token, the stream) when #state first read `finished`, noted by a "
        "MutationObserver; #log rows drawn: one for a snapshot; for a replay, one per event with "
        "each stretch of llm.delta folded into one (checked: the rows stand for events 1..N). "
        f"A tab not finished after {cap_s:g} s is shown as more, with the rows it had drawn "
        f"by then (as it last reported them, every {ROWS_EVERY_MS} ms), and is not opened "
        "again in later repetitions."
    )
