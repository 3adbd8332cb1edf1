"""``service/web/dashboard.js`` and ``charts.js`` in a real Chromium, on a page of the service's
origin with nothing else on it but theme.css and dashboard.css: the numbers of a real account
(runs that succeeded, failed, were cancelled and are in progress), drawn and tabled exactly as
``GET /api/stats`` gives them; an account with no runs; a failed request; both schemes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from playwright.async_api import Page
from pydantic import SecretStr

from service.api import examples
from service.store.db import Pool
from tests.conftest import AppFactory, RunningApp, free_socket
from tests.helpers import SMALL_SPEC, create_via_api, insert_running_generation, wait_for_status
from tests.web.browser import RUN_S, axe_violations, blank_page, screenshot_path

pytestmark = pytest.mark.slow

OUTCOMES = ("succeeded", "failed", "cancelled", "in_progress")
DURATIONS = ("p50_duration_s", "p95_duration_s")

# The page the main view gives the dashboard: theme.css, dashboard.css, a <main> to draw in.
SET_UP = """async (base) => {
    document.documentElement.lang = "en";
    for (const sheet of ["theme.css", "dashboard.css"]) {
        const link = document.createElement("link");
        link.rel = "stylesheet";
        link.href = `${base}/static/${sheet}`;
        const loaded = new Promise((resolve, reject) => {
            link.onload = resolve;
            link.onerror = reject;
        });
        document.head.append(link);
        await loaded;
    }
    Object.assign(document.body.style, { margin: "0", fontFamily: "system-ui, sans-serif" });
    const main = document.createElement("main");
    main.id = "root";
    main.style.padding = "1rem";
    document.body.replaceChildren(main);
}"""

# loadDashboard with a fetchStats that calls the API with the key, as the page will; what it
# received is kept on `window` for the test to hold the drawing to.
LOAD = """async ([key, days]) => {
    const { loadDashboard } = await import("/static/dashboard.js");
    window.received = [];
    window.loaded = loadDashboard(document.getElementById("root"), {
        days,
        fetchStats: async (n) => {
            const headers = { Authorization: `Bearer ${key}` };
            const response = await fetch(`/api/stats?days=${n}`, { headers });
            if (!response.ok) throw new Error((await response.json()).detail);
            const stats = await response.json();
            window.received.push(stats);
            return stats;
        },
    });
}"""

# What the dashboard shows: every figure, every mark's data attributes, every table cell.
READ = """() => {
    const root = document.getElementById("root");
    const marks = (selector) => [...root.querySelectorAll(selector)].map((el) => ({...el.dataset}));
    const tables = {};
    for (const figure of root.querySelectorAll("figure")) {
        const svg = figure.querySelector("svg[role=img]");
        tables[figure.dataset.chart] = {
            name: document.getElementById(svg.getAttribute("aria-labelledby")).textContent,
            caption: figure.querySelector("table caption").textContent,
            columns: [...figure.querySelectorAll("thead th[scope=col]")].map((t) => t.textContent),
            rows: [...figure.querySelectorAll("tbody tr")].map((tr) => ({
                head: tr.querySelector("th[scope=row]").textContent,
                day: tr.querySelector("time")?.getAttribute("datetime") ?? null,
                cells: [...tr.querySelectorAll("td")].map(
                    (td) => ({ value: td.dataset.value, text: td.textContent })),
            })),
        };
    }
    return {
        state: root.dataset.state,
        figures: Object.fromEntries([...root.querySelectorAll("[data-figure]")].map((card) => {
            const dd = card.querySelector("dd");
            return [card.dataset.figure, { value: dd.dataset.value, text: dd.textContent }];
        })),
        runBars: marks('[data-chart="stacked-bars"] rect.dash-bar'),
        durationDots: marks('[data-chart="lines"] .dash-dot[data-day]'),
        tokenBars: marks('[data-chart="bars"] rect.dash-bar'),
        tables,
        svgs: root.querySelectorAll("svg[role=img]").length,
        alert: root.querySelector("[role=alert]")?.textContent ?? null,
        text: root.textContent,
    };
}"""


# Every mark's tone, its computed colours, and the theme.css variable its tone names; and the
# colours of chart text and of the figure it is drawn on.
COLOURS = """() => {
    const root = document.getElementById("root");
    const marks = [...root.querySelectorAll("svg[role=img] :is(.dash-bar, .dash-dot, .dash-line)")];
    const text = root.querySelector("svg[role=img] text");
    return {
        marks: marks.map((el) => {
            const tone = [...el.classList].find((name) => name.startsWith("tone-")).slice(5);
            const style = getComputedStyle(el);
            // The variable as a colour where the mark is (theme.css pairs light-dark()).
            const probe = document.createElement("span");
            probe.style.color = `var(--${tone})`;
            el.closest("figure").append(probe);
            const variable = getComputedStyle(probe).color;
            probe.remove();
            return { tag: el.tagName, tone, fill: style.fill, stroke: style.stroke, variable };
        }),
        text: getComputedStyle(text).fill,
        surface: getComputedStyle(text.closest("figure")).backgroundColor,
    };
}"""


def rgb(colour: str) -> tuple[int, int, int]:
    """``#1b7039`` or ``rgb(27, 112, 57)`` as numbers."""
    if colour.startswith("#"):
        return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16))
    red, green, blue = colour.removeprefix("rgb(").removesuffix(")").split(",")[:3]
    return (int(red), int(green), int(blue))


def contrast(one: str, other: str) -> float:
    """WCAG 2's contrast ratio of two colours."""

    def luminance(colour: str) -> float:
        channels = [c / 255 for c in rgb(colour)]
        linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


async def assert_theme_colours(page: Page) -> None:
    """Marks are painted in their tone's theme.css colour (a line's is its stroke), and chart
    text keeps WCAG AA contrast (axe does not look inside SVG)."""
    colours = await page.evaluate(COLOURS)
    assert colours["marks"]
    for mark in colours["marks"]:
        painted = mark["stroke"] if mark["tag"] == "path" else mark["fill"]
        assert rgb(painted) == rgb(mark["variable"]), mark
        if mark["tag"] == "path":
            assert mark["fill"] == "none", mark
    assert contrast(colours["text"], colours["surface"]) >= 4.5, colours


async def wait_drawn(page: Page, state: str = "ready") -> None:
    await page.wait_for_function(
        "s => document.getElementById('root')?.dataset.state === s", arg=state, timeout=RUN_S
    )


async def blank_dashboard_page(page: Page, running: RunningApp) -> None:
    await blank_page(page, running)
    await page.evaluate(SET_UP, running.base_url)


async def dashboard(
    page: Page, running: RunningApp, key: str, days: int = 30, state: str = "ready"
) -> dict[str, Any]:
    """The dashboard of ``key``'s account, loaded into a blank page as the main view would,
    once it is in ``state``: what it shows, and (``received``) the stats it was given."""
    await blank_dashboard_page(page, running)
    await page.evaluate(LOAD, [key, days])
    await wait_drawn(page, state)
    shown: dict[str, Any] = await page.evaluate(READ)
    (shown["received"],) = await page.evaluate("window.received")
    return shown


async def account_with_every_outcome(app_factory: AppFactory, key: str, pool: Pool) -> None:
    """Two runs that succeeded, one that failed (Gemini at a closed port), one cancelled before
    any worker took it, and one in progress (held by the test)."""
    async with app_factory(worker_concurrency=0) as running, running.client(key) as client:
        cancelled = (await create_via_api(client))["id"]
        assert (await client.post(f"/api/generations/{cancelled}/cancel")).status_code == 202
    closed = free_socket()
    unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    async with (
        app_factory(
            gemini_api_key=SecretStr("test-key"), gemini_base_url=unreachable, gemini_attempts=1
        ) as running,
        running.client(key) as client,
    ):
        ids = [(await create_via_api(client))["id"] for _ in range(2)]
        failed = (await create_via_api(client, SMALL_SPEC, provider="gemini"))["id"]
        for generation_id in ids:
            await wait_for_status(client, generation_id, "succeeded")
        await wait_for_status(client, failed, "failed")
    await insert_running_generation(pool, "alice")


def seconds_shown(text: str, value: float) -> bool:
    """``6.62 s`` for 6.6189...: two decimals under 10 s, one above."""
    shown = float(text.removesuffix(" s"))
    return abs(shown - value) <= (0.005 if value < 10 else 0.05) + 1e-9


def assert_figures(figures: dict[str, dict[str, str]], stats: dict[str, Any]) -> None:
    runs = stats["generations"]
    for key in ("total", *OUTCOMES):
        assert figures[key] == {"value": str(runs[key]), "text": f"{runs[key]:,}"}, key
    finished = runs["succeeded"] + runs["failed"] + runs["cancelled"]
    assert float(figures["success_rate"]["value"]) == pytest.approx(runs["succeeded"] / finished)
    assert figures["success_rate"]["text"] == f"{round(100 * runs['succeeded'] / finished)}%"
    for name in ("duration_s", "to_first_event_s", "to_first_file_s"):
        for which in ("p50", "p95"):
            figure, value = figures[f"{name}_{which}"], stats[name][which]
            assert float(figure["value"]) == value, (name, which)
            assert seconds_shown(figure["text"], value), (name, which, figure)
    for kind in ("prompt", "output"):
        n = stats["tokens"][kind]
        assert figures[f"tokens_{kind}"] == {"value": str(n), "text": f"{n:,}"}
    for kind, n in stats["recoveries"].items():
        assert figures[f"recoveries_{kind}"] == {"value": str(n), "text": f"{n:,}"}, kind


def assert_runs_per_day(shown: dict[str, Any], stats: dict[str, Any]) -> None:
    days = stats["days"]
    assert {(bar["day"], bar["series"]): int(bar["value"]) for bar in shown["runBars"]} == {
        (day["day"], key): day[key] for day in days for key in OUTCOMES if day[key] > 0
    }
    table = shown["tables"]["stacked-bars"]
    assert table["name"] == "Runs per day, by outcome"
    assert table["columns"] == ["Day", "Succeeded", "Failed", "Cancelled", "In progress", "Total"]
    assert [row["day"] for row in table["rows"]] == [day["day"] for day in days]
    for row, day in zip(table["rows"], days, strict=True):
        expected = [day[key] for key in (*OUTCOMES, "total")]
        assert [int(cell["value"]) for cell in row["cells"]] == expected
        assert [cell["text"] for cell in row["cells"]] == [str(n) for n in expected]


def assert_durations(shown: dict[str, Any], stats: dict[str, Any]) -> None:
    timed = [day for day in stats["days"] if day["p50_duration_s"] is not None]
    assert {(dot["day"], dot["series"]): float(dot["value"]) for dot in shown["durationDots"]} == {
        (day["day"], key): day[key] for day in timed for key in DURATIONS
    }
    table = shown["tables"]["lines"]
    assert [row["day"] for row in table["rows"]] == [day["day"] for day in timed]
    for row, day in zip(table["rows"], timed, strict=True):
        for cell, key in zip(row["cells"], DURATIONS, strict=True):
            assert float(cell["value"]) == day[key]
            assert seconds_shown(cell["text"], day[key])


def assert_tokens(shown: dict[str, Any], stats: dict[str, Any]) -> None:
    models = stats["tokens_by_model"]
    keys = [f"{row['provider']}/{row['model'] or ''}" for row in models]
    assert {(bar["key"], bar["series"]): int(bar["value"]) for bar in shown["tokenBars"]} == {
        (key, kind): row[kind] for key, row in zip(keys, models, strict=True)
        for kind in ("prompt", "output")
    }  # fmt: skip
    table = shown["tables"]["bars"]
    assert table["columns"] == ["Provider and model", "Prompt (in)", "Output (out)"]
    assert [row["head"] for row in table["rows"]] == [
        f"{row['provider']} · {row['model'] or 'no model named'}" for row in models
    ]
    for row, model in zip(table["rows"], models, strict=True):
        assert [cell["text"] for cell in row["cells"]] == [
            f"{model['prompt']:,}",
            f"{model['output']:,}",
        ]
        assert [int(cell["value"]) for cell in row["cells"]] == [model["prompt"], model["output"]]


async def test_a_real_accounts_numbers_are_drawn_and_tabled_exactly(
    app_factory: AppFactory, api_key: str, pool: Pool, page: Page
) -> None:
    before = datetime.now(UTC).date().isoformat()
    await account_with_every_outcome(app_factory, api_key, pool)
    async with app_factory(worker_concurrency=0) as running:
        shown = await dashboard(page, running, api_key, days=7)
        async with running.client(api_key) as client:
            stats = (await client.get("/api/stats", params={"days": 7})).json()
        violations = await axe_violations(page)
        await assert_theme_colours(page)
        await page.screenshot(path=screenshot_path("dashboard-light"), full_page=True)

    assert shown["received"] == stats  # nothing changed between the page's read and ours
    assert stats["generations"] == {
        "total": 5, "succeeded": 2, "failed": 1, "cancelled": 1, "in_progress": 1,
    }  # fmt: skip
    assert stats["days"][-1]["day"] in (before, datetime.now(UTC).date().isoformat())
    assert len(stats["days"]) == 7
    assert shown["state"] == "ready"
    assert_figures(shown["figures"], stats)
    assert_runs_per_day(shown, stats)
    assert_durations(shown, stats)
    assert_tokens(shown, stats)
    assert "NaN" not in shown["text"]
    assert "undefined" not in shown["text"]
    assert violations == []


async def test_the_dark_scheme_has_no_serious_accessibility_violation(
    app_factory: AppFactory, api_key: str, pool: Pool, dark_page: Page
) -> None:
    await account_with_every_outcome(app_factory, api_key, pool)
    async with app_factory(worker_concurrency=0) as running:
        shown = await dashboard(dark_page, running, api_key)
        background = await dark_page.evaluate(
            "getComputedStyle(document.getElementById('root')).backgroundColor"
        )
        violations = await axe_violations(dark_page)
        await assert_theme_colours(dark_page)
        await dark_page.screenshot(path=screenshot_path("dashboard-dark"), full_page=True)
    assert background == "rgb(14, 17, 22)"  # theme.css's dark --bg: the dark scheme is on
    assert_figures(shown["figures"], shown["received"])
    assert_runs_per_day(shown, shown["received"])
    assert_durations(shown, shown["received"])
    assert_tokens(shown, shown["received"])
    assert violations == []


# --- states: no runs, none in the period, loading, failing; a narrow screen --------------------

RENDER = """async (stats) => {
    const { renderDashboard } = await import("/static/dashboard.js");
    renderDashboard(document.getElementById("root"), stats);
}"""


async def test_an_account_without_runs_gets_an_empty_state_in_words(
    running: RunningApp, api_key: str, page: Page
) -> None:
    shown = await dashboard(page, running, api_key, state="empty")
    violations = await axe_violations(page)
    # All-time runs, none in the period: words instead of an empty chart.
    old_runs_only = {**shown["received"]}
    old_runs_only["generations"] = {**old_runs_only["generations"], "total": 3, "succeeded": 3}
    await page.evaluate(RENDER, old_runs_only)
    await wait_drawn(page)
    quiet: dict[str, Any] = await page.evaluate(READ)

    assert shown["svgs"] == 0
    assert "No runs yet" in shown["text"]
    assert "Start a generation" in shown["text"]
    assert "NaN" not in shown["text"]
    assert violations == []
    assert quiet["svgs"] == 0
    assert quiet["figures"]["total"] == {"value": "3", "text": "3"}
    assert quiet["figures"]["duration_s_p50"] == {"value": "", "text": "none yet"}
    assert "No runs in the last 30 days" in quiet["text"]
    assert "No model tokens yet" in quiet["text"]
    assert "NaN" not in quiet["text"]


# fetchStats as the test drives it: each call waits until the test settles it.
PENDING = """async () => {
    const { loadDashboard } = await import("/static/dashboard.js");
    window.calls = [];
    loadDashboard(document.getElementById("root"), {
        fetchStats: (n) => new Promise(
            (resolve, reject) => window.calls.push({ n, resolve, reject })),
    });
}"""


async def test_loading_then_an_error_in_words_then_try_again_and_another_period(
    running: RunningApp, page: Page
) -> None:
    stats = examples.SUCCESS["getStats"]
    await blank_dashboard_page(page, running)
    await page.evaluate(PENDING)
    await wait_drawn(page, "loading")
    loading = await page.evaluate(
        "[document.querySelector('#root [role=status]').textContent,"
        " document.querySelector('#root [aria-busy=true]') !== null]"
    )
    await page.evaluate("window.calls[0].reject(new Error('the database is away'))")
    await wait_drawn(page, "error")
    error: dict[str, Any] = await page.evaluate(READ)
    violations = await axe_violations(page)
    await page.click("#root button:has-text('Try again')")
    await page.wait_for_function("window.calls.length === 2")
    await page.evaluate("s => window.calls[1].resolve(s)", stats)
    await wait_drawn(page)
    await page.select_option("#root select", "7")
    await page.wait_for_function("window.calls.length === 3")
    await page.evaluate("s => window.calls[2].resolve(s)", stats)
    await wait_drawn(page)
    shown: dict[str, Any] = await page.evaluate(READ)
    asked = await page.evaluate("window.calls.map((call) => call.n)")
    status = await page.text_content("#root [role=status]")

    assert loading == ["Loading the numbers…", True]
    assert error["alert"] == "Could not load the numbers: the database is awayTry again"
    assert error["svgs"] == 0
    assert violations == []
    assert asked == [30, 30, 7]
    assert status == "Showing the last 3 days."  # as many as the answer has
    assert shown["alert"] is None
    assert_figures(shown["figures"], stats)
    assert_runs_per_day(shown, stats)
    assert_durations(shown, stats)
    assert_tokens(shown, stats)


async def test_at_320_pixels_wide_nothing_overflows_and_chart_text_keeps_its_size(
    running: RunningApp, page: Page
) -> None:
    await page.set_viewport_size({"width": 320, "height": 900})
    await blank_dashboard_page(page, running)
    await page.evaluate(RENDER, examples.SUCCESS["getStats"])
    await wait_drawn(page)
    await page.evaluate(
        "document.querySelectorAll('#root details').forEach((d) => { d.open = true; })"
    )
    measured = await page.evaluate(
        """() => ({
            overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
            scales: [...document.querySelectorAll("#root svg[role=img]")].map(
                (svg) => svg.getBoundingClientRect().width / svg.viewBox.baseVal.width),
        })"""
    )
    violations = await axe_violations(page)
    await page.screenshot(path=screenshot_path("dashboard-320"), full_page=True)
    assert measured["overflow"] <= 0
    assert len(measured["scales"]) == 3
    assert all(0.9 <= scale <= 1.1 for scale in measured["scales"]), measured
    assert violations == []
