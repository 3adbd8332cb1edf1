"""Every view and state of the page (``service/web/index.html``) in both colour schemes:
axe-core finds no serious or critical violation in any, and each leaves a screenshot in
``test-artifacts/screenshots/`` (``<view>-<scheme>.png``)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Page
from pydantic import SecretStr

from tests.conftest import AppFactory, free_socket
from tests.helpers import create_via_api, wait_for_status
from tests.web.browser import (
    FILE_SHOWN,
    axe_violations,
    browser_page,
    screenshot_path,
    sign_in,
    wait_state,
)

pytestmark = pytest.mark.slow


async def checked(page: Page, view: str, scheme: str, found: dict[str, Any]) -> None:
    """axe-core on the page as it stands, and its picture."""
    found[view] = await axe_violations(page)
    await page.screenshot(path=screenshot_path(f"{view}-{scheme}"), full_page=True)


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_every_view_and_state_has_no_serious_accessibility_violation(
    app_factory: AppFactory, api_key: str, scheme: str
) -> None:
    closed = free_socket()  # a Gemini endpoint that refuses every connection: a failed run
    unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    found: dict[str, Any] = {}
    async with (
        app_factory(
            offline_delay_s=0.05,
            gemini_api_key=SecretStr("test-key"),
            gemini_base_url=unreachable,
            gemini_attempts=1,
        ) as running,
        browser_page(scheme) as page,
    ):
        async with running.client(api_key) as client:
            failed = (await create_via_api(client, provider="gemini"))["id"]
            await wait_for_status(client, failed)
        await page.goto(running.base_url + "/")
        await checked(page, "no-key", scheme, found)
        await sign_in(page, running, api_key)
        await checked(page, "welcome", scheme, found)
        await page.click("#generate")
        await page.wait_for_function(
            "document.querySelectorAll('#timeline svg .bar').length >= 3", timeout=60_000
        )
        await wait_state(page, "live")
        await checked(page, "live", scheme, found)
        await wait_state(page, "finished")
        await page.click("#files li[data-path='app/main.py'] button")
        await page.wait_for_function(FILE_SHOWN)
        await page.click("#log tr.group button.fold")
        await checked(page, "finished", scheme, found)
        await page.goto(f"{running.base_url}/#{failed}")
        await page.reload()
        await wait_state(page, "failed")
        await checked(page, "failed", scheme, found)
        await page.goto(f"{running.base_url}/#dashboard")
        await page.wait_for_selector("#dashboard[data-state=ready] figure")
        await checked(page, "dashboard", scheme, found)
        await page.set_viewport_size({"width": 320, "height": 800})
        await page.goto(f"{running.base_url}/#{failed}")
        await page.reload()
        await wait_state(page, "failed")
        await checked(page, "narrow", scheme, found)
    problems = {
        view: [f"{v['id']} on {n['target']}: {n['why']}" for v in violations for n in v["nodes"]]
        for view, violations in found.items()
        if violations
    }
    assert problems == {}
    assert len(found) == 7
