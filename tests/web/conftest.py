"""The ``page`` fixture: a Chromium page in the light scheme (``dark_page``: the dark one)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Page

from tests.web.browser import browser_page


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with browser_page() as page:
        yield page


@pytest.fixture
async def dark_page() -> AsyncIterator[Page]:
    async with browser_page("dark") as page:
        yield page
