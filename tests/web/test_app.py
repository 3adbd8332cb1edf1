"""The web page (``service/web/app.js``) in a real Chromium.

Each test serves the app on a real port, types into the page as a person would, and reads
what the page shows; the stored log is the reference. Screenshots go to
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import zipfile
from typing import Any

import pytest
from genstream_client import EventPage
from playwright.async_api import Download, Page, Request, Route
from pydantic import SecretStr, ValidationError

from service.generation.phases import PHASES
from service.spec import Spec
from service.store.db import Pool
from tests.conftest import AppFactory, KeyFactory, RunningApp, free_socket
from tests.generation.fake_gemini import Hang, Stream
from tests.generation.model_runs import ANSWERS, gemini_app
from tests.helpers import (
    create_via_api,
    wait_for_status,
)
from tests.web.browser import (
    FILE_SHOWN,
    RUN_S,
    STREAM,
    free_port,
    screenshot_path,
    sign_in,
    stored,
    wait_state,
)

pytestmark = pytest.mark.slow

ENTITIES = "\n".join(f"Thing{n}: title str, count int, note str" for n in range(4))


async def generate(page: Page, entities: str = ENTITIES, provider: str = "offline") -> str:
    await page.fill("#entities", entities)
    await page.select_option("#provider", provider)
    await page.click("#generate")
    await page.wait_for_function("document.getElementById('run-id').textContent.length === 36")
    return await page.text_content("#run-id") or ""


# The seqs the event log stands for: a row per event (`data-seq`), a folded stretch of model
# text (`data-first`..`data-last`), a snapshot (1..`data-through`); rows of an unfolded
# stretch (`.delta`) repeat their stretch's.
SEQS_ON_SCREEN = """() => [...document.querySelectorAll('#log tr')].flatMap((row) => {
    const d = row.dataset;
    if (d.through) return Array.from({length: Number(d.through)}, (_, i) => i + 1);
    if (d.first) return Array.from({length: d.last - d.first + 1}, (_, i) => Number(d.first) + i);
    return row.classList.contains('delta') ? [] : [Number(d.seq)];
})"""


async def wait_seq(page: Page, at_least: int) -> None:
    await page.wait_for_function(
        f"n => ({SEQS_ON_SCREEN})().length >= n", arg=at_least, timeout=RUN_S
    )


async def shown(page: Page) -> dict[str, Any]:
    """What the page shows: the log's seqs, the files, the progress, the state."""
    return {
        "seqs": await page.evaluate(SEQS_ON_SCREEN),
        "files": await page.eval_on_selector_all(
            "#files li[data-path]", "items => items.map(i => i.dataset.path)"
        ),
        "progress": await page.get_attribute("#progress", "aria-valuenow"),
        "state": await page.text_content("#state"),
    }


async def test_a_full_run_shows_every_event_once_every_file_and_the_end(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    async with app_factory(offline_delay_s=0.01) as running:
        await sign_in(page, running, api_key)
        generation_id = await generate(page)
        await wait_seq(page, 10)
        await page.screenshot(path=screenshot_path("mid-run"), full_page=True)
        await wait_state(page, "finished")
        await page.click("#files li[data-path='app/main.py'] button")
        await page.wait_for_function(
            FILE_SHOWN,
            timeout=10_000,
        )
        await page.screenshot(path=screenshot_path("finished"), full_page=True)
        viewer = await page.text_content("#viewer pre[data-code]") or ""
        async with page.expect_download() as download_info:
            await page.click("#zip")
        archive = await (await download_info.value).path()
        view = await shown(page)
        log = await stored(running, api_key, generation_id)
        async with running.client(api_key) as client:
            main_py = await client.get(f"/api/generations/{generation_id}/files/app/main.py")
    assert view["seqs"] == log["seqs"] == list(range(1, len(log["seqs"]) + 1))
    assert view["files"] == log["files"]
    assert len(view["files"]) >= 4
    assert view["progress"] == "100"
    assert view["state"] == "finished"
    assert log["last"]["type"] == "generation.succeeded"
    assert viewer == main_py.text
    with zipfile.ZipFile(archive) as zipped:
        assert sorted(zipped.namelist()) == sorted(log["files"])


async def test_the_page_resumes_exactly_where_it_was_after_the_server_restarts(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    port = free_port()
    settings = {"offline_delay_s": 0.03, "sse_retry_ms": 300}
    async with app_factory(port=port, **settings) as first:
        await sign_in(page, first, api_key)
        generation_id = await generate(page)
        await wait_seq(page, 8)
    # The server is gone mid-run: its streams were closed and its run handed back.
    await wait_state(page, "reconnecting", timeout_ms=10_000)
    await page.screenshot(path=screenshot_path("reconnecting"), full_page=True)
    async with app_factory(port=port, **settings) as second:
        await wait_state(page, "finished")
        view = await shown(page)
        log = await stored(second, api_key, generation_id)
    assert view["seqs"] == log["seqs"] == list(range(1, len(log["seqs"]) + 1))
    assert view["files"] == log["files"]
    assert log["last"]["type"] == "generation.succeeded"


async def test_a_reload_mid_run_and_after_the_end_rebuilds_the_same_view(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    async with app_factory(offline_delay_s=0.02) as running:
        await sign_in(page, running, api_key)
        generation_id = await generate(page)
        await wait_seq(page, 6)
        await page.reload()
        await wait_state(page, "finished")
        after_mid_run_reload = await shown(page)
        await page.reload()
        await wait_state(page, "finished")
        after_end_reload = await shown(page)
        log = await stored(running, api_key, generation_id)
    assert after_mid_run_reload == after_end_reload
    assert after_end_reload["seqs"] == log["seqs"] == list(range(1, len(log["seqs"]) + 1))
    assert after_end_reload["files"] == log["files"]
    assert after_end_reload["progress"] == "100"


async def drawn(page: Page) -> dict[str, Any]:
    """Everything the run view draws from the events, the log table aside."""
    return {
        **{key: value for key, value in (await shown(page)).items() if key != "seqs"},
        "phases": await page.eval_on_selector_all(
            "#phases tr", "rows => rows.map(r => [...r.cells].map(c => c.textContent).join(' | '))"
        ),
        "totals": await page.text_content("#phase-totals"),
        "figures": await page.text_content("#figures"),
        "timeline": await page.eval_on_selector_all(
            "#timeline svg .bar, #timeline svg .mark",
            "shapes => shapes.map(s => [s.getAttribute('class'), s.getAttribute('aria-label')"
            " || s.textContent, s.getAttribute('x'), s.getAttribute('width')])",
        ),
        "verification": await page.text_content("#verification"),
        "stage": await page.text_content("#stage"),
        "model": await page.text_content("#model"),
        "error": await page.text_content("#run-error"),
        "rows": await page.eval_on_selector_all("#log tr", "rows => rows.length"),
    }


@pytest.mark.parametrize("outcome", ["finished", "failed"])
async def test_a_run_opened_from_its_snapshot_draws_what_its_events_draw(
    app_factory: AppFactory, api_key: str, page: Page, outcome: str
) -> None:
    """The same run opened from its snapshot (the page's default for a run it did not start)
    and from every event (`?snapshot=0`): the same phases, files, stage, progress, state and
    error; the log table has one row for the snapshot."""
    closed = free_socket()  # a Gemini endpoint that refuses every connection: a failed run
    unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    async with app_factory(
        offline_delay_s=0.0,
        gemini_api_key=SecretStr("test-key"),
        gemini_base_url=unreachable,
        gemini_attempts=1,
    ) as running:
        async with running.client(api_key) as client:
            if outcome == "failed":
                created = await create_via_api(client, provider="gemini")
            else:
                created = await create_via_api(client, verify="compile")
            generation_id = created["id"]
            await wait_for_status(client, generation_id, seconds=60)
        log = await stored(running, api_key, generation_id)
        await sign_in(page, running, api_key)
        await page.goto(f"{running.base_url}/?snapshot=0#{generation_id}")
        await wait_state(page, outcome)
        replayed = await drawn(page)
        replayed_seqs = await page.evaluate(SEQS_ON_SCREEN)
        await page.goto(f"{running.base_url}/#{generation_id}")
        await page.reload()  # a hash change alone does not reopen the page
        await wait_state(page, outcome)
        from_snapshot = await drawn(page)
    assert replayed_seqs == log["seqs"]
    assert from_snapshot["rows"] == 1
    # The snapshot carries the end of the model's text: "…" and its last 4,000 characters.
    text = replayed["model"]
    cut = "…" + text[-4000:] if len(text) > 4000 else text
    assert from_snapshot["model"] == cut
    assert {**from_snapshot, "rows": 0, "model": ""} == {**replayed, "rows": 0, "model": ""}
    assert (replayed["state"] or "").startswith(outcome)
    if outcome == "finished":
        assert any(phase.startswith("verify | passed") for phase in replayed["phases"])
        assert replayed["rows"] < len(log["seqs"])  # the model's text folded
        assert len(text) > 4000


async def test_a_past_generation_opens_from_the_list(
    running: RunningApp, api_key: str, page: Page
) -> None:
    await sign_in(page, running, api_key)
    generation_id = await generate(page, "User: email str")
    await wait_state(page, "finished")
    first = await shown(page)
    await page.goto(running.base_url + "/")  # a fresh page, nothing on screen
    await page.click("#refresh")
    await page.click(f"#generations li:has-text('{generation_id[:8]}') button")
    await wait_state(page, "finished")
    assert await shown(page) == first


async def test_a_failed_run_says_why_in_words(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    closed = free_socket()  # a Gemini endpoint that refuses every connection
    unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    async with app_factory(
        gemini_api_key=SecretStr("test-key"), gemini_base_url=unreachable, gemini_attempts=1
    ) as running:
        await sign_in(page, running, api_key)
        await generate(page, "User: email str", provider="gemini")
        await wait_state(page, "failed")
        await page.screenshot(path=screenshot_path("failed"), full_page=True)
        error = await page.text_content("#run-error") or ""
        core = await page.text_content("#phases tr[data-phase=core] td:nth-child(2)")
        state = await page.text_content("#state") or ""
    assert core == "failed"
    assert error.startswith("Failed: ")
    assert len(error) > len("Failed: ") + 10
    # The state says why too, in its first line (the error box has all of it).
    assert state.startswith("failed: ")
    assert state.removeprefix("failed: ").removesuffix("…")[:40] in error


async def test_cancel_stops_the_run_and_retry_finishes_it(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    async with app_factory(offline_delay_s=0.05) as running:
        await sign_in(page, running, api_key)
        generation_id = await generate(page)
        await wait_seq(page, 3)
        await page.click("#cancel")
        await wait_state(page, "cancelled")
        log = await stored(running, api_key, generation_id)
        view = await shown(page)
        cancel_hidden = await page.is_hidden("#cancel")
        await page.click("#retry")  # offered on a cancelled (or failed) run
        await wait_state(page, "finished")
        retried = await stored(running, api_key, generation_id)
        after = await shown(page)
        retry_hidden = await page.is_hidden("#retry")
    assert log["last"]["type"] == "generation.cancelled"
    assert view["seqs"] == log["seqs"]
    assert cancel_hidden
    assert retried["last"]["type"] == "generation.succeeded"
    assert after["seqs"] == retried["seqs"]
    assert after["files"] == list(dict.fromkeys(retried["files"]))
    assert retry_hidden


async def test_the_page_is_usable_at_320_pixels_wide(running: RunningApp, page: Page) -> None:
    await page.set_viewport_size({"width": 320, "height": 800})
    await page.goto(running.base_url + "/")
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    await page.screenshot(path=screenshot_path("narrow"), full_page=True)
    assert overflow <= 0
    # Keyboard only: Tab reaches the key field and the Generate button.
    focused: set[str] = set()
    for _ in range(12):
        await page.keyboard.press("Tab")
        focused.add(await page.evaluate("document.activeElement.id"))
    assert {"api-key", "project", "entities"} <= focused


async def test_a_finished_generation_replays_at_its_recorded_pace_to_the_same_view(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    async with app_factory(offline_delay_s=0.01) as running:
        await sign_in(page, running, api_key)
        generation_id = await generate(page, "User: email str")
        await wait_state(page, "finished")
        original = await shown(page)
        await page.click("#refresh")
        await page.select_option("#replay-speed", "2")
        await page.click(
            f"#generations li:has-text('{generation_id[:8]}') button:has-text('replay')"
        )
        await wait_state(page, "replaying")
        await wait_state(page, "finished")
        replayed = await shown(page)
    assert replayed == original


async def test_an_event_past_a_gap_waits_for_the_gap_to_be_fetched_and_repeats_are_ignored(
    running: RunningApp, api_key: str, page: Page
) -> None:
    await sign_in(page, running, api_key)
    generation_id = await generate(page, "User: email str")
    await wait_state(page, "finished")
    log = await stored(running, api_key, generation_id)
    async with running.client(api_key) as client:
        page_text = (
            await client.get(f"/api/generations/{generation_id}/events", params={"limit": 1000})
        ).text
    events = EventPage.from_text(page_text).events  # each with its text as the server wrote it
    # Every stream the page opens sends seq 5 first (a gap of 1..4), then seq 5 and seq 2
    # again, then ends, with a retry hint too long to matter here. The page must fetch the
    # rest from the log and show 1..N once each, in order.
    frames = "".join(
        f"id: {event.seq}\nevent: {event.type}\ndata: {event.raw}\n\n"
        for event in (events[4], events[4], events[1])
    )

    gapped_streams: list[str] = []

    async def gapped(route: Route) -> None:
        gapped_streams.append(route.request.url)
        await route.fulfill(
            status=200, content_type="text/event-stream", body=f"retry: 600000\n\n{frames}"
        )

    await page.route(STREAM, gapped)
    await page.goto(running.base_url + "/")  # a fresh page, nothing on screen
    await page.click("#refresh")
    await page.click(f"#generations li:has-text('{generation_id[:8]}') button")
    await wait_state(page, "finished")
    view = await shown(page)
    assert gapped_streams
    assert view["seqs"] == log["seqs"] == list(range(1, len(events) + 1))


async def test_the_key_field_shows_the_prefix_keys_start_with(
    running: RunningApp, api_key: str, page: Page
) -> None:
    await page.goto(running.base_url + "/")
    placeholder = await page.get_attribute("#api-key", "placeholder") or ""
    prefix = placeholder.removesuffix("…")
    assert prefix == "gsk_"
    assert api_key.startswith(prefix)  # what the service's keys really start with


# Project names and whether service/spec.py accepts them (checked below, so the cases cannot
# drift from the rule): the page's field must say the same before anything is sent.
PROJECT_NAMES = {
    "shop": True,
    "a": True,
    "Shop_2": True,
    "my-shop": True,
    "A-_9": True,
    "x" * 64: True,
    "  shop  ": True,  # the page trims it, the server strips it
    "": False,
    "   ": False,
    "2shop": False,
    "_shop": False,
    "-shop": False,
    "my shop": False,
    "shop!": False,
    "shop.io": False,
    "shop/api": False,
    "café": False,
    "x" * 65: False,
}


def spec_accepts(project: str) -> bool:
    entities = [{"name": "User", "fields": {"email": "str"}}]
    try:
        Spec.model_validate({"project": project, "entities": entities})
    except ValidationError:
        return False
    return True


async def test_the_project_field_accepts_exactly_the_names_the_spec_accepts(
    running: RunningApp, api_key: str, page: Page
) -> None:
    await sign_in(page, running, api_key)
    in_the_browser = await page.evaluate(
        """names => names.map(name => {
            const input = document.getElementById('project');
            input.value = name;
            return input.checkValidity();
        })""",
        list(PROJECT_NAMES),
    )
    assert {name: spec_accepts(name) for name in PROJECT_NAMES} == PROJECT_NAMES
    assert dict(zip(PROJECT_NAMES, in_the_browser, strict=True)) == PROJECT_NAMES
    # Through the form: a name the field refuses is never posted; one it takes is, trimmed.
    posted: list[Any] = []

    def record(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/api/generations"):
            posted.append(request.post_data_json)

    page.on("request", record)
    await page.fill("#project", "2shop")
    await page.click("#generate")
    await page.fill("#project", "  my-shop  ")
    await generate(page, "User: email str")
    assert [body["spec"]["project"] for body in posted] == ["my-shop"]


ZIP_FAILED = "Could not download the zip: "


async def set_revoked(pool: Pool, owner: str, revoked: bool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE api_keys SET revoked_at = CASE WHEN $2 THEN clock_timestamp() END"
            " WHERE owner = $1",
            owner,
            revoked,
        )


@pytest.mark.parametrize(
    ("failure", "shown"),
    [
        pytest.param("server error", "500", id="500"),
        pytest.param("no answer", "Failed to fetch", id="network"),
        pytest.param("revoked key", "unknown, expired or revoked API key", id="401-revoked-key"),
        pytest.param("another owner's key", "not found", id="404-another-owner"),
    ],
)
async def test_a_zip_download_that_fails_says_why_and_a_retry_gets_the_zip(
    running: RunningApp,
    api_key: str,
    make_key: KeyFactory,
    pool: Pool,
    page: Page,
    failure: str,
    shown: str,
) -> None:
    await sign_in(page, running, api_key)
    generation_id = await generate(page, "User: email str")
    await wait_state(page, "finished")
    archive = f"**/api/generations/{generation_id}/archive"

    async def server_error(route: Route) -> None:
        await route.fulfill(status=500, content_type="text/plain", body="boom")

    async def no_answer(route: Route) -> None:
        await route.abort("connectionrefused")

    if failure == "server error":
        await page.route(archive, server_error)
    elif failure == "no answer":
        await page.route(archive, no_answer)
    elif failure == "revoked key":
        await set_revoked(pool, "alice", True)
    else:
        other = await make_key("bob")
        await page.evaluate("key => localStorage.setItem('genstream.apiKey', key)", other)
    downloads: list[Download] = []

    def record(download: Download) -> None:
        downloads.append(download)

    page.on("download", record)
    await page.click("#zip")
    await page.wait_for_function(
        "prefix => document.getElementById('run-error').textContent.startsWith(prefix)",
        arg=ZIP_FAILED,
        timeout=10_000,
    )
    error = await page.text_content("#run-error") or ""
    assert downloads == []
    assert shown in error
    assert len(error) > len(ZIP_FAILED)

    # Put right, the same link downloads the zip and the message goes away.
    await page.unroute(archive)
    await set_revoked(pool, "alice", False)
    await page.evaluate("key => localStorage.setItem('genstream.apiKey', key)", api_key)
    async with page.expect_download() as download_info:
        await page.click("#zip")
    archive_path = await (await download_info.value).path()
    await page.wait_for_function("document.getElementById('run-error').textContent === ''")
    with zipfile.ZipFile(archive_path) as zipped:
        assert zipped.namelist()


KEY_COMMAND = "python -m service keys create --owner you"


async def test_a_key_is_kept_only_once_the_service_accepts_it_and_each_state_says_what_to_do(
    running: RunningApp, api_key: str, page: Page
) -> None:
    await page.goto(running.base_url + "/")
    no_key = await page.text_content("#no-key") or ""
    no_key_visible = await page.is_visible("#no-key")
    await page.fill("#api-key", "gsk_not-a-key-the-service-made")
    await page.press("#api-key", "Enter")
    await page.wait_for_selector("#key-state:has-text('refused')")
    refused = await page.text_content("#no-key") or ""
    kept_after_refusal = await page.evaluate("localStorage.getItem('genstream.apiKey')")
    await page.fill("#api-key", api_key)
    await page.press("#api-key", "Enter")
    await page.wait_for_selector("#key-state:has-text('key saved')")
    kept = await page.evaluate("localStorage.getItem('genstream.apiKey')")
    notice_after = await page.is_visible("#no-key")
    await page.click("#generate")  # the key works: a run starts
    await wait_state(page, "finished")
    # The service stops accepting the saved key: the page says so where the key is entered.
    await page.evaluate("localStorage.setItem('genstream.apiKey', 'gsk_revoked-meanwhile')")
    await page.reload()
    await page.wait_for_selector("#key-state:has-text('refused')")
    revoked = await page.text_content("#no-key") or ""
    assert no_key_visible
    assert KEY_COMMAND in no_key
    assert "refused" in refused
    assert KEY_COMMAND in refused
    assert kept_after_refusal is None
    assert kept == api_key
    assert not notice_after
    assert "refused the saved key" in revoked
    assert KEY_COMMAND in revoked


async def background(page: Page) -> str:
    color: str = await page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    return color


async def test_the_theme_follows_the_system_until_the_toggle_picks_one_and_is_remembered(
    running: RunningApp, dark_page: Page
) -> None:
    page = dark_page  # the system prefers dark
    await page.goto(running.base_url + "/")
    await page.wait_for_selector("#theme[aria-pressed=true]")
    system_dark = await background(page)
    await page.click("#theme")
    await page.wait_for_selector("#theme[aria-pressed=false]")
    chosen_light = await background(page)
    theme = await page.get_attribute("html", "data-theme")
    await page.reload()
    await page.wait_for_selector("#theme[aria-pressed=false]")
    after_reload = await background(page)
    await page.focus("#theme")  # and by the keyboard
    await page.keyboard.press("Enter")
    await page.wait_for_selector("#theme[aria-pressed=true]")
    dark_again = await background(page)
    assert system_dark == "rgb(14, 17, 22)"  # theme.css's dark --bg
    assert chosen_light == after_reload == "rgb(244, 246, 249)"  # its light --bg
    assert theme == "light"
    assert dark_again == system_dark


# Every text #state shows, in order, recorded as it changes.
RECORD_STATES = """() => {
    window.states = [];
    new MutationObserver(() => {
        const text = document.getElementById('state').textContent;
        if (window.states.at(-1) !== text) window.states.push(text);
    }).observe(document.getElementById('state'),
               {childList: true, characterData: true, subtree: true});
}"""


async def test_the_state_says_in_words_that_the_model_is_slow_and_is_asked_again(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    # Each state lasts long enough to be drawn (the page draws the latest once per frame):
    # waits every 0.15 s, and 0.5 s before the model is asked again.
    async with gemini_app(
        app_factory, gemini_timeout_s=0.6, llm_waiting_s=0.15, gemini_backoff_s=0.5
    ) as (running, fake):
        fake.script(Hang(5), *(Stream(ANSWERS[p.stage][1], 120, 80) for p in PHASES))
        await sign_in(page, running, api_key)
        await page.evaluate(RECORD_STATES)
        await page.select_option("#verify", "off")
        await generate(page, "User: email str", provider="gemini")
        await wait_state(page, "finished")
        states: list[str] = await page.evaluate("window.states")
    waiting = [s for s in states if s.startswith("live: waiting for the model (")]
    retrying = [s for s in states if s.startswith("live: slow model, retry 1 of ")]
    assert waiting
    assert retrying
    assert states.index(waiting[0]) < states.index(retrying[0])
    assert states[-1] == "finished"
    assert states[-2] == "live"  # the model answered: plain live again
