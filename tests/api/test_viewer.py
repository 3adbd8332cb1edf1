"""``/schema`` in a real Chromium with every request off the service's origin refused: Swagger
UI must load from the service alone and show the completed document (its operations and the
event types), not Litestar's draft of it."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page, Route, async_playwright

from tests.conftest import AppFactory

pytestmark = pytest.mark.slow

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("the viewer's test needs Debian's chromium: `make browser` installs it")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield await (await browser.new_context()).new_page()
        finally:
            await browser.close()


async def test_the_schema_viewer_works_with_no_internet(
    app_factory: AppFactory, page: Page
) -> None:
    refused: list[str] = []
    async with app_factory(worker_concurrency=0) as running:

        async def only_the_service(route: Route) -> None:
            if route.request.url.startswith(running.base_url):
                await route.continue_()
            else:
                refused.append(route.request.url)
                await route.abort()

        await page.route("**/*", only_the_service)
        await page.goto(running.base_url + "/schema")
        # Swagger UI draws one block per operation, from the document embedded in the page.
        await page.wait_for_selector("#operations-default-createGeneration, [id$=createGeneration]")
        operations = await page.locator(".opblock").count()
        await page.get_by_text("PhaseCompletedEvent").first.wait_for()
        async with running.client() as client:
            document = (await client.get("/schema/openapi.json")).json()
    assert refused == []
    documented = sum(
        method in ("get", "put", "post", "delete", "patch")
        for item in document["paths"].values()
        for method in item
    )
    assert operations == documented == 18
