"""Chromium for the web page's tests: Debian's, driven by Playwright (no browser download),
and what every page test does with it (sign in, wait for a state, take a screenshot)."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import axe_playwright_python
import pytest
from playwright.async_api import Page, Route, async_playwright

from service.settings import PROJECT_ROOT
from tests.conftest import RunningApp, free_socket

SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",  # required as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_S = 60_000  # ms: the longest any run here may take to show its end
STREAM = re.compile(r"/api/generations/[^/]+/stream\?")  # any generation's stream request
# The run view's file viewer has a file on screen (fileview.js: the code, not loading).
FILE_SHOWN = (
    "document.querySelector('#viewer pre[data-code]:not([aria-busy=true])')?.textContent.length > 0"
)
BLANK = "/blank-page-for-genstream-js"  # answered by the browser itself, never by the service


def free_port() -> int:
    """A port nobody listens on now: a server restarted on it is where clients expect it."""
    sock = free_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("the web page's tests need Debian's chromium: `make browser` installs it")
    return path


@asynccontextmanager
async def browser_page(
    color_scheme: str = "light", permissions: Sequence[str] = ()
) -> AsyncIterator[Page]:
    """A fresh Chromium with one page, 1200 by 1000, in the given colour scheme, with the
    given permissions granted on every origin (``["clipboard-read", "clipboard-write"]``)."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(
                viewport={"width": 1200, "height": 1000},
                color_scheme=color_scheme,  # type: ignore[arg-type]
                permissions=list(permissions),
            )
            yield await context.new_page()
        finally:
            await browser.close()


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


async def sign_in(page: Page, running: RunningApp, key: str) -> None:
    await page.goto(running.base_url + "/")
    await page.fill("#api-key", key)
    await page.click("#key-form button[type=submit]")
    await page.wait_for_selector("#key-state:has-text('key saved')")


async def wait_state(page: Page, state: str, timeout_ms: int = RUN_S) -> None:
    await page.wait_for_function(
        "s => document.getElementById('state').textContent.startsWith(s)",
        arg=state,
        timeout=timeout_ms,
    )


async def blank_page(page: Page, running: RunningApp) -> None:
    """An empty page of the service's origin: modules under test are imported into it."""

    async def blank(route: Route) -> None:
        await route.fulfill(content_type="text/html", body="<!doctype html><title>blank</title>")

    await page.route(running.base_url + BLANK, blank)
    await page.goto(running.base_url + BLANK)


async def stored(running: RunningApp, key: str, generation_id: str) -> dict[str, Any]:
    """The run's log as the events endpoint returns it: the reference a page is held to."""
    async with running.client(key) as client:
        response = await client.get(
            f"/api/generations/{generation_id}/events", params={"limit": 1000}
        )
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()["events"]
    return {
        "seqs": [event["seq"] for event in events],
        "files": [event["data"]["path"] for event in events if event["type"] == "file.saved"],
        "last": events[-1],
    }


AXE_SCRIPT = Path(axe_playwright_python.__file__).with_name("axe.min.js")
SERIOUS = ("serious", "critical")


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it stands (WCAG 2.2 A and AA
    and axe's best practices), each with the elements it found them on; [] when none."""
    if not await page.evaluate("typeof window.axe === 'object'"):
        await page.add_script_tag(path=str(AXE_SCRIPT))
    violations: list[dict[str, Any]] = await page.evaluate(
        """async () => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations.map((v) => ({
                id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.map((n) => ({ target: n.target.join(" "), why: n.failureSummary })),
            }));
        }"""
    )
    return [violation for violation in violations if violation["impact"] in SERIOUS]
