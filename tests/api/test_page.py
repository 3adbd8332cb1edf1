"""``GET /`` and ``/static/*``: the page and its modules, served as browsers require (the page
itself is tested in Chromium: ``tests/web``)."""

from __future__ import annotations

from tests.conftest import RunningApp


async def test_the_page_is_served_with_its_script_and_style(running: RunningApp) -> None:
    async with running.client() as client:
        index = await client.get("/")
        script = await client.get("/static/app.js")
        module = await client.get("/static/genstream.js")
        style = await client.get("/static/app.css")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert '<script src="/static/app.js" type="module"' in index.text
    assert script.status_code == 200
    assert 'from "./genstream.js"' in script.text
    # A module script is refused by browsers unless served as JavaScript.
    for served in (script, module):
        assert served.headers["content-type"].startswith("text/javascript")
    assert module.status_code == 200
    assert "export function follow(" in module.text
    assert "EventSource" in module.text
    assert style.status_code == 200
