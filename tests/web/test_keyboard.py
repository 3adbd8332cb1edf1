"""The page by keyboard alone, in Chromium: every control is reached with Tab and used with
Enter, Space or the arrow keys (a key saved, a run started, cancelled and retried, a file
read, the model's text unfolded, the log filtered, the timeline read, the zip downloaded,
the dashboard and the theme), and the focus is always visible."""

from __future__ import annotations

import pytest
from playwright.async_api import Page

from tests.conftest import AppFactory
from tests.web.browser import FILE_SHOWN, wait_state

pytestmark = pytest.mark.slow

MAX_TABS = 300  # more than the page has controls, even with a long list of files


async def tab_to(page: Page, selector: str) -> None:
    """Tab until the focus is on ``selector``: it can be reached without a mouse, and the
    focus shows (an outline or a stroke)."""
    for _ in range(MAX_TABS):
        await page.keyboard.press("Tab")
        if await page.evaluate("s => document.activeElement.matches(s)", selector):
            visible = await page.evaluate(
                """() => {
                    const style = getComputedStyle(document.activeElement);
                    return style.outlineStyle !== 'none' || style.stroke !== 'none';
                }"""
            )
            assert visible, f"{selector} has the focus but does not show it"
            return
    pytest.fail(f"Tab never reached {selector}")


async def test_every_control_works_from_the_keyboard_alone(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    async with app_factory(offline_delay_s=0.03) as running:
        await page.goto(running.base_url + "/")
        await page.keyboard.press("Tab")
        skip = await page.evaluate("document.activeElement.textContent")
        await page.keyboard.press("Enter")
        after_skip = await page.evaluate("document.activeElement.id")
        await tab_to(page, "#api-key")
        await page.keyboard.type(api_key)
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#key-state:has-text('key saved')")

        await tab_to(page, "#entities")
        await page.keyboard.press("Control+A")
        await page.keyboard.type("User: email str, age int")
        await tab_to(page, "#generate")
        await page.keyboard.press("Enter")
        await wait_state(page, "live")
        await tab_to(page, "#cancel")
        await page.keyboard.press("Enter")
        await wait_state(page, "cancelled")
        await tab_to(page, "#retry")
        await page.keyboard.press("Space")
        await wait_state(page, "finished")

        await tab_to(page, "#timeline svg .bar[data-row=core]")
        details = await page.text_content("#timeline .timeline-details") or ""
        await tab_to(page, "#files li[data-path='app/main.py'] button")
        await page.keyboard.press("Enter")
        await page.wait_for_function(FILE_SHOWN)
        await tab_to(page, "#viewer button.fileview-copy")
        await page.keyboard.press("Enter")
        await page.wait_for_function(
            "document.querySelector('#viewer .fileview-status').textContent.startsWith('Cop')"
        )
        copied = await page.text_content("#viewer .fileview-status") or ""
        await tab_to(page, "#viewer button.fileview-download")
        async with page.expect_download() as one_file:
            await page.keyboard.press("Enter")
        file_name = (await one_file.value).suggested_filename
        await tab_to(page, "#log tr.group button.fold")
        await page.keyboard.press("Enter")
        unfolded = await page.locator("#log tr.delta").count()
        await tab_to(page, "#log-filter")
        await page.keyboard.press("ArrowDown")  # the first type after "every type"
        chosen = await page.eval_on_selector("#log-filter", "s => s.value")
        shown_types = await page.eval_on_selector_all(
            "#log tr:not([hidden])", "rows => [...new Set(rows.map(r => r.dataset.type))]"
        )
        await tab_to(page, "#zip")
        async with page.expect_download() as download:
            await page.keyboard.press("Enter")
        name = (await download.value).suggested_filename

        await tab_to(page, "#theme")
        await page.keyboard.press("Space")
        theme = await page.get_attribute("html", "data-theme")
        await tab_to(page, "#nav-dashboard")
        await page.keyboard.press("Enter")
        await page.wait_for_selector("#dashboard-view:not([hidden])")
        runs_hidden = await page.is_hidden("#runs-view")
    assert skip == "Skip to the content"
    assert after_skip == "main"
    assert details.startswith("core: completed")
    assert copied.startswith("Copied ")
    assert file_name == "main.py"
    assert unfolded > 0
    assert chosen
    assert shown_types == [chosen]
    assert name.endswith(".zip")
    assert theme == "dark"
    assert runs_hidden
