"""``service/web/genstream.js`` alone, in a real Chromium, on a page of the service's origin
with nothing else on it: follow a run across restarts, snapshots, chains, tokens and stalls."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlsplit
from uuid import UUID

import pytest
from playwright.async_api import Page, Request, Route

from service.access import tokens
from service.api.stream import OpenStreams
from service.store.db import Pool
from tests.conftest import AppFactory, KeyFactory, RunningApp
from tests.helpers import (
    create_via_api,
    finished_generation,
    state_via_api,
    wait_for_status,
    wait_until,
)
from tests.web.browser import (
    RUN_S,
    STREAM,
    blank_page,
    free_port,
    stored,
)

pytestmark = pytest.mark.slow

# --- genstream.js alone, on a page of the same origin with nothing else on it ---------------

# Follows with the listener API, keeping what it was told on `window` for the test to read.
FOLLOW = """async ([id, options]) => {
    const { follow } = await import("/static/genstream.js");
    Object.assign(window, { seen: [], states: [], reasons: [], outcome: null, snapshots: [] });
    const run = follow(id, options);
    run.addEventListener("snapshot", (e) => window.snapshots.push(e.detail.seq));
    run.addEventListener("event", (e) => window.seen.push(e.detail));
    run.addEventListener("state", (e) => {
        window.states.push(e.detail.state);
        window.reasons.push(e.detail.reason);
    });
    run.done.then(
        (event) => { window.outcome = { done: event.seq }; },
        (error) => {
            const { name, status, detail, message } = error;
            window.outcome = { name, status, detail, message };
        },
    );
}"""
# The same through `for await`.
ITERATE = """async ([id, options]) => {
    const { follow } = await import("/static/genstream.js");
    Object.assign(window, { seen: [], states: [], reasons: [], outcome: null });
    const run = follow(id, options);
    run.addEventListener("state", (e) => {
        window.states.push(e.detail.state);
        window.reasons.push(e.detail.reason);
    });
    (async () => {
        try {
            for await (const event of run) window.seen.push(event);
            window.outcome = { done: window.seen.at(-1).seq };
        } catch (error) {
            const { name, status, detail, message } = error;
            window.outcome = { name, status, detail, message };
        }
    })();
}"""


async def start_generation(running: RunningApp, key: str) -> str:
    async with running.client(key) as client:
        created = await create_via_api(client)
    generation_id: str = created["id"]
    return generation_id


async def followed(page: Page) -> dict[str, Any]:
    """What the module delivered once its ``done`` settled."""
    await page.wait_for_function("window.outcome !== null", timeout=RUN_S)
    result: dict[str, Any] = await page.evaluate(
        "({seen: window.seen, states: window.states, reasons: window.reasons,"
        " outcome: window.outcome, snapshots: window.snapshots})"
    )
    return result


async def test_the_module_alone_follows_a_run_across_a_server_restart(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    port = free_port()
    settings = {"offline_delay_s": 0.03, "sse_retry_ms": 300}
    async with app_factory(port=port, **settings) as first:
        generation_id = await start_generation(first, api_key)
        await blank_page(page, first)
        await page.evaluate(FOLLOW, [generation_id, {"apiKey": api_key}])
        await page.wait_for_function("window.seen.length >= 8", timeout=RUN_S)
    # The server is gone mid-run: its streams were closed and its run handed back.
    await page.wait_for_function("window.states.includes('reconnecting')", timeout=10_000)
    before_restart = await page.evaluate("window.seen.length")
    async with app_factory(port=port, **settings) as second:
        result = await followed(page)
        log = await stored(second, api_key, generation_id)
    seqs = [event["seq"] for event in result["seen"]]
    assert seqs == log["seqs"] == list(range(1, len(log["seqs"]) + 1))
    assert before_restart < len(seqs)  # the second server sent the rest
    assert result["seen"][-1] == log["last"]
    assert log["last"]["type"] == "generation.succeeded"
    assert result["outcome"] == {"done": len(seqs)}
    assert result["states"][0] == "connecting"
    assert result["states"][-2:] == ["live", "done"]


async def seq_reached(client: Any, generation_id: str, seq: int) -> bool:
    return bool((await state_via_api(client, generation_id))["last_seq"] >= seq)


async def test_the_module_starts_from_a_snapshot_and_follows_the_tail_across_a_restart(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    port = free_port()
    settings = {"offline_delay_s": 0.03, "sse_retry_ms": 300}
    async with app_factory(port=port, **settings) as first:
        generation_id = await start_generation(first, api_key)
        async with first.client(api_key) as client:
            await wait_until(
                lambda: seq_reached(client, generation_id, 8), "the run at seq 8", RUN_S / 1000
            )
        await blank_page(page, first)
        await page.evaluate(FOLLOW, [generation_id, {"apiKey": api_key, "snapshot": True}])
        await page.wait_for_function("window.seen.length >= 3", timeout=RUN_S)
    await page.wait_for_function("window.states.includes('reconnecting')", timeout=10_000)
    async with app_factory(port=port, **settings) as second:
        result = await followed(page)
        log = await stored(second, api_key, generation_id)
        # A run that had ended: its snapshot, and done at once with its terminal event.
        await page.evaluate(FOLLOW, [generation_id, {"apiKey": api_key, "snapshot": True}])
        ended = await followed(page)
    (seq,) = result["snapshots"]
    assert seq >= 8
    assert [event["seq"] for event in result["seen"]] == log["seqs"][seq:]
    assert result["seen"][-1] == log["last"]
    assert result["outcome"] == {"done": log["seqs"][-1]}  # the chain held from the snapshot's
    assert ended["snapshots"] == [log["seqs"][-1]]
    assert ended["seen"] == []
    assert ended["outcome"] == {"done": log["seqs"][-1]}
    assert ended["states"][-1] == "done"


FOLLOW_ALL = """async ([options]) => {
    const { followAll } = await import("/static/genstream.js");
    Object.assign(window, { runs: {}, allStates: [], runErrors: [] });
    const all = followAll(options);
    all.addEventListener("event", (e) => {
        (window.runs[e.detail.generation_id] ??= []).push(e.detail.seq);
    });
    all.addEventListener("snapshot", (e) => {
        const seqs = Array.from({ length: e.detail.seq }, (_, i) => i + 1);
        (window.runs[e.detail.generation_id] ??= []).push(...seqs);
    });
    all.addEventListener("runerror", (e) => window.runErrors.push(e.detail));
    all.addEventListener("state", (e) => window.allStates.push(e.detail.state));
}"""


async def test_ten_runs_follow_over_one_connection_across_a_server_restart(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    """followAll() in Chromium over HTTP/1.1: ten runs at once on one stream, the server
    restarted in the middle; each run's events arrive exactly once, in order."""
    port = free_port()
    settings = {"offline_delay_s": 0.03, "sse_retry_ms": 300, "worker_concurrency": 10}
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    async with app_factory(port=port, **settings) as first:
        await blank_page(page, first)
        await page.evaluate(FOLLOW_ALL, [{"apiKey": api_key}])
        await page.wait_for_function("window.allStates.includes('live')", timeout=10_000)
        ids = [await start_generation(first, api_key) for _ in range(10)]
        await page.wait_for_function(
            "Object.keys(window.runs).length === 10"
            " && Object.values(window.runs).flat().length >= 60",
            timeout=RUN_S,
        )
    await page.wait_for_function("window.allStates.includes('reconnecting')", timeout=10_000)
    async with app_factory(port=port, **settings) as second:
        async with second.client(api_key) as client:
            for run in ids:
                await wait_for_status(client, run, seconds=60)
        logs = {run: (await stored(second, api_key, run))["seqs"] for run in ids}
        await page.wait_for_function(
            "logs => Object.entries(logs).every(([id, seqs]) =>"
            " (window.runs[id] || []).length >= seqs.length)",
            arg=logs,
            timeout=RUN_S,
        )
        open_streams = OpenStreams.count
        seen = await page.evaluate("window.runs")
        errors = await page.evaluate("window.runErrors")
    assert seen == logs
    assert errors == []
    assert open_streams == 1, "one connection for all ten runs"
    streams = [url for url in requests if "/stream?" in url]
    assert streams, "followAll must open a stream"
    assert all("/api/stream?" in url for url in streams), "no stream of one generation"


@pytest.mark.parametrize("where", ["the stream", "the log"])
async def test_the_module_checks_the_chain_and_ends_an_altered_run_in_words(
    running: RunningApp, api_key: str, pool: Pool, page: Page, where: str
) -> None:
    """An event altered in the database after it was stored: the module delivers the events
    before it, then ends with "incomplete or altered", whether the stream or the log (a gap
    it fills: the stream is told to start after seq 1) brought the altered one."""
    intact = await finished_generation(pool)
    altered = await finished_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE generation_events SET message = 'forged' WHERE generation_id = $1 AND seq = 3",
            altered,
        )
    await blank_page(page, running)
    await page.evaluate(FOLLOW, [str(intact), {"apiKey": api_key}])
    clean = await followed(page)
    options: dict[str, Any] = {"apiKey": api_key}
    if where == "the log":
        await page.route("**/stream?*", lambda route: route.continue_(
            url=route.request.url.replace("after=0", "after=3")))  # fmt: skip
    await page.evaluate(FOLLOW, [str(altered), options])
    result = await followed(page)

    assert clean["outcome"] == {"done": 5}
    assert [event["seq"] for event in result["seen"]] == [1, 2]
    assert result["states"][-1] == "error"
    assert result["outcome"]["message"] == (
        "incomplete or altered: seq 3 does not follow the events before it"
    )


@pytest.mark.parametrize("whose", ["nobody's", "another owner's"])
async def test_a_key_the_service_refuses_ends_the_module_with_the_services_reason(
    running: RunningApp, api_key: str, make_key: KeyFactory, page: Page, whose: str
) -> None:
    generation_id = await start_generation(running, api_key)
    key = "gsk_" + "x" * 40 if whose == "nobody's" else await make_key("bob")
    async with running.client(key) as client:
        refused = await client.post(f"/api/generations/{generation_id}/stream-token")
    assert refused.status_code in (401, 404), refused.text
    await blank_page(page, running)
    await page.evaluate(FOLLOW, [generation_id, {"apiKey": key}])
    result = await followed(page)
    reason = refused.json()["detail"]
    assert result["outcome"] == {
        "name": "FollowError",
        "status": refused.status_code,
        "detail": reason,
        "message": reason,
    }
    assert result["seen"] == []
    assert result["states"] == ["connecting", "error"]
    assert result["reasons"][-1] == reason


async def test_the_module_takes_a_fresh_token_when_its_own_has_expired(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    async with app_factory(offline_delay_s=0.01) as running:
        generation_id = await start_generation(running, api_key)
        async with running.client(api_key) as client:
            issued = await client.post(f"/api/generations/{generation_id}/stream-token")
        key_id = UUID(hex=issued.json()["stream_token"].split(".")[1])
        secret = running.app.state.services.token_secret
        expired = tokens.issue(secret, UUID(generation_id), 60, key_id, now=time.time() - 3600)
        streams: list[str] = []

        def record(request: Request) -> None:
            if STREAM.search(request.url):
                streams.append(request.url)

        page.on("request", record)
        await blank_page(page, running)
        options = {"apiKey": api_key, "token": expired, "retryMs": 100}
        await page.evaluate(ITERATE, [generation_id, options])
        result = await followed(page)
        log = await stored(running, api_key, generation_id)
    assert [event["seq"] for event in result["seen"]] == log["seqs"]
    assert result["outcome"] == {"done": len(log["seqs"])}
    assert result["states"][:2] == ["connecting", "reconnecting"]  # the stream refused it
    assert result["states"][-2:] == ["live", "done"]  # and took a fresh one
    tokens_sent = [parse_qs(urlsplit(url).query)["token"][0] for url in streams]
    assert tokens_sent[0] == expired
    assert expired not in tokens_sent[1:]


async def test_the_module_reads_the_log_when_its_stream_stalls(
    app_factory: AppFactory, api_key: str, page: Page
) -> None:
    async with app_factory(offline_delay_s=0.01) as running:
        generation_id = await start_generation(running, api_key)
        stalled: list[Route] = []

        async def stall(route: Route) -> None:
            stalled.append(route)  # never answered: no open, no event, no error, ever

        await page.route(STREAM, stall, times=1)
        await blank_page(page, running)
        await page.evaluate(FOLLOW, [generation_id, {"apiKey": api_key, "stallMs": 500}])
        result = await followed(page)
        log = await stored(running, api_key, generation_id)
    assert len(stalled) == 1
    assert [event["seq"] for event in result["seen"]] == log["seqs"]
    assert result["outcome"] == {"done": len(log["seqs"])}
    assert "stalled" in result["reasons"]


async def test_the_module_resumes_after_the_seq_it_is_given_and_a_loop_left_early_closes_it(
    running: RunningApp, api_key: str, page: Page
) -> None:
    generation_id = await start_generation(running, api_key)
    async with running.client(api_key) as client:
        await wait_for_status(client, generation_id)
    log = await stored(running, api_key, generation_id)
    last = log["seqs"][-1]
    await blank_page(page, running)
    # Mid-way: the rest, from after+1.
    await page.evaluate(FOLLOW, [generation_id, {"apiKey": api_key, "after": 5}])
    mid_way = await followed(page)
    # At the terminal event itself (the stream answers 204): done, with nothing to deliver.
    await page.evaluate(FOLLOW, [generation_id, {"apiKey": api_key, "after": last, "retryMs": 100}])
    at_the_end = await followed(page)
    left_early = await page.evaluate(
        """async ([id, apiKey]) => {
            const { follow } = await import("/static/genstream.js");
            const run = follow(id, { apiKey });
            const seqs = [];
            for await (const event of run) {
                seqs.push(event.seq);
                if (seqs.length === 3) break;
            }
            const ending = await run.done.then(() => "resolved", (error) => error.name);
            return { seqs, state: run.state, ending };
        }""",
        [generation_id, api_key],
    )
    assert [event["seq"] for event in mid_way["seen"]] == log["seqs"][5:]
    assert mid_way["outcome"] == {"done": last}
    assert at_the_end["seen"] == []
    assert at_the_end["outcome"] == {"done": last}
    assert left_early == {"seqs": [1, 2, 3], "state": "closed", "ending": "AbortError"}
