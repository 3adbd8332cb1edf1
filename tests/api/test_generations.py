from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from pydantic import SecretStr

from service.access import keys
from service.generation.providers.offline import STAGES, render_phase
from service.spec import Spec
from service.store import event_log, projections
from service.store.db import Pool
from tests.conftest import AppFactory, KeyFactory, RunningApp, free_socket
from tests.helpers import (
    API,
    SPEC,
    create_via_api,
    state_via_api,
    wait_for_status,
    wait_until,
)

TERMINAL = {"generation.succeeded", "generation.failed", "generation.cancelled"}
EVENT_KEYS = [
    "generation_id", "seq", "type", "status", "stage", "progress", "message", "timestamp", "data",
    "chain",
]  # fmt: skip
STATE_KEYS = {
    "id", "status", "stage", "progress", "last_seq", "created_at", "started_at", "finished_at",
    "error",
}  # fmt: skip

# Six entities: 20 files and a few seconds of run at offline_delay_s=0.05, time enough to cancel.
BIG_SPEC: dict[str, Any] = {
    "project": "big",
    "entities": [
        {"name": f"Thing{n}", "fields": {"title": "str", "count": "int", "note": "str"}}
        for n in range(6)
    ],
}


async def all_events(client: httpx.AsyncClient, generation_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/{generation_id}/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["has_more"] is False
    events: list[dict[str, Any]] = body["events"]
    return events


async def finished(running: RunningApp, api_key: str) -> str:
    async with running.client(api_key) as client:
        generation_id = str((await create_via_api(client))["id"])
        await wait_for_status(client, generation_id, "succeeded")
    return generation_id


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/")
    assert "json" in response.headers["content-type"]
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


# --- create and run ------------------------------------------------------------------------


async def test_create_answers_201_with_the_links_and_a_stream_token(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        response = await client.post(API, json={"spec": SPEC, "provider": "offline"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "status", "stream_url", "stream_token", "events_url"}
    assert body["status"] == "queued"
    assert body["stream_url"] == f"{API}/{body['id']}/stream"
    assert body["events_url"] == f"{API}/{body['id']}/events"
    assert body["stream_token"]
    assert "gsk_" not in body["stream_token"]


async def test_a_created_generation_runs_to_success_with_a_complete_log(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = str((await create_via_api(client))["id"])
        done = await wait_for_status(client, generation_id)
        events = await all_events(client, generation_id)
    assert done["status"] == "succeeded"
    assert set(done) >= STATE_KEYS
    assert done["id"] == generation_id
    assert done["progress"] == 1.0
    assert done["error"] is None
    assert done["last_seq"] == len(events)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    created = datetime.fromisoformat(done["created_at"])
    started = datetime.fromisoformat(done["started_at"])
    ended = datetime.fromisoformat(done["finished_at"])
    assert created <= started <= ended
    types = [event["type"] for event in events]
    assert types[:2] == ["generation.queued", "generation.started"]
    assert types[-1] == "generation.succeeded"
    assert sum(t in TERMINAL for t in types) == 1
    assert "file.saved" in types
    for event in events:
        assert list(event) == EVENT_KEYS
        assert event["generation_id"] == generation_id
    progresses = [event["progress"] for event in events]
    assert progresses == sorted(progresses)


# --- list ----------------------------------------------------------------------------------


async def test_list_pages_through_every_generation_newest_first_exactly_once(
    app_factory: AppFactory, api_key: str
) -> None:
    async with app_factory(worker_concurrency=0) as app, app.client(api_key) as client:
        created = [str((await create_via_api(client))["id"]) for _ in range(5)]
        seen: list[str] = []
        pages: list[int] = []
        cursor: str | None = None
        async with asyncio.timeout(10):
            while True:
                params: dict[str, Any] = {"limit": 2}
                if cursor is not None:
                    params["cursor"] = cursor
                response = await client.get(API, params=params)
                assert response.status_code == 200, response.text
                body = response.json()
                pages.append(len(body["items"]))
                seen.extend(item["id"] for item in body["items"])
                cursor = body["next_cursor"]
                if cursor is None:
                    break
        everything = (await client.get(API)).json()
    assert seen == list(reversed(created))
    assert pages == [2, 2, 1]
    assert [item["id"] for item in everything["items"]] == list(reversed(created))
    assert everything["next_cursor"] is None
    for item in everything["items"]:
        assert set(item) >= STATE_KEYS
        assert item["status"] == "queued"


async def test_list_with_an_exact_multiple_of_the_limit_ends_without_an_empty_page(
    app_factory: AppFactory, api_key: str
) -> None:
    async with app_factory(worker_concurrency=0) as app, app.client(api_key) as client:
        for _ in range(4):
            await create_via_api(client)
        first = (await client.get(API, params={"limit": 2})).json()
        second = (await client.get(API, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert len(second["items"]) == 2
    assert second["next_cursor"] is None


async def test_list_filters_by_status_and_pages_within_the_filter(
    app_factory: AppFactory, api_key: str
) -> None:
    async with app_factory(worker_concurrency=0) as app, app.client(api_key) as client:
        created = [str((await create_via_api(client))["id"]) for _ in range(5)]
        for generation_id in (created[0], created[2], created[4]):
            cancelled = await client.post(f"{API}/{generation_id}/cancel")
            assert cancelled.status_code == 202, cancelled.text
        queued = (await client.get(API, params={"status": "queued"})).json()
        first = (await client.get(API, params={"status": "cancelled", "limit": 2})).json()
        rest = (
            await client.get(
                API, params={"status": "cancelled", "limit": 2, "cursor": first["next_cursor"]}
            )
        ).json()
        succeeded = (await client.get(API, params={"status": "succeeded"})).json()
    assert [item["id"] for item in queued["items"]] == [created[3], created[1]]
    assert [item["id"] for item in first["items"] + rest["items"]] == [
        created[4], created[2], created[0],
    ]  # fmt: skip
    assert {item["status"] for item in first["items"] + rest["items"]} == {"cancelled"}
    assert rest["next_cursor"] is None
    assert succeeded == {"items": [], "next_cursor": None}


def _cursor_of(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "!!!!",
        "\u00e9t\u00e9",
        _cursor_of("null"),
        _cursor_of('{"a": 1}'),
        _cursor_of("[1, 2]"),
        _cursor_of('["yesterday", "nobody"]'),
        _cursor_of('["2024-01-01T00:00:00+00:00", "not-a-uuid"]'),
        _cursor_of('["2024-01-01T00:00:00+00:00"]'),
        base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode(),
        _cursor_of("[" * 5000),
        _cursor_of(json.dumps(["0001-01-01T00:00:00+05:00", str(uuid4())])),
        _cursor_of(json.dumps(["9999-12-31T23:59:59-05:00", str(uuid4())])),
        "\x00",
    ],
    ids=[
        "garbage",
        "not-base64",
        "non-ascii",
        "null",
        "object",
        "numbers",
        "not-a-date",
        "not-a-uuid",
        "one-element",
        "not-utf-8",
        "deeply-nested",
        "year-0-in-utc",
        "year-10000-in-utc",
        "nul",
    ],
)
async def test_a_bad_cursor_is_400(running: RunningApp, api_key: str, cursor: str) -> None:
    async with running.client(api_key) as client:
        response = await client.get(API, params={"cursor": cursor})
    assert_problem(response, 400)


async def test_a_well_formed_cursor_we_never_issued_is_not_a_server_error(
    running: RunningApp, api_key: str
) -> None:
    naive = _cursor_of(json.dumps(["2024-01-01T00:00:00", str(uuid4())]))
    async with running.client(api_key) as client:
        response = await client.get(API, params={"cursor": naive})
    assert 200 <= response.status_code < 500, response.text


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": -1},
        {"limit": "ten"},
        {"status": "bogus"},
        {"status": "null"},  # Litestar alone would read it as no status at all
    ],
)
async def test_bad_list_parameters_are_400(
    running: RunningApp, api_key: str, params: dict[str, Any]
) -> None:
    async with running.client(api_key) as client:
        response = await client.get(API, params=params)
    assert_problem(response, 400)


async def test_list_accepts_the_largest_page(running: RunningApp, api_key: str) -> None:
    async with running.client(api_key) as client:
        response = await client.get(API, params={"limit": 100})
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


# --- events --------------------------------------------------------------------------------


async def test_events_page_through_the_whole_log_in_order(
    running: RunningApp, api_key: str
) -> None:
    generation_id = await finished(running, api_key)
    async with running.client(api_key) as client:
        last_seq = (await state_via_api(client, generation_id))["last_seq"]
        seqs: list[int] = []
        after = 0
        requests = 0
        async with asyncio.timeout(10):
            while True:
                response = await client.get(
                    f"{API}/{generation_id}/events", params={"after": after, "limit": 7}
                )
                requests += 1
                assert response.status_code == 200, response.text
                body = response.json()
                assert set(body) == {"events", "next_after", "has_more"}
                page = [event["seq"] for event in body["events"]]
                assert len(page) <= 7
                assert page == list(range(after + 1, after + 1 + len(page)))
                assert body["next_after"] == (page[-1] if page else after)
                seqs.extend(page)
                after = body["next_after"]
                if not body["has_more"]:
                    break
    assert last_seq > 7
    assert seqs == list(range(1, last_seq + 1))
    assert requests == -(-last_seq // 7)


async def test_an_events_page_that_ends_exactly_at_the_end_says_no_more(
    running: RunningApp, api_key: str
) -> None:
    generation_id = await finished(running, api_key)
    async with running.client(api_key) as client:
        last_seq = (await state_via_api(client, generation_id))["last_seq"]
        exact = await client.get(f"{API}/{generation_id}/events", params={"limit": last_seq})
        short = await client.get(f"{API}/{generation_id}/events", params={"limit": last_seq - 1})
    assert len(exact.json()["events"]) == last_seq
    assert exact.json()["has_more"] is False
    assert exact.json()["next_after"] == last_seq
    assert short.json()["has_more"] is True
    assert short.json()["next_after"] == last_seq - 1


async def test_events_after_the_end_are_an_empty_page(running: RunningApp, api_key: str) -> None:
    generation_id = await finished(running, api_key)
    async with running.client(api_key) as client:
        last_seq = (await state_via_api(client, generation_id))["last_seq"]
        at_end = await client.get(f"{API}/{generation_id}/events", params={"after": last_seq})
        beyond = await client.get(f"{API}/{generation_id}/events", params={"after": last_seq + 50})
    assert at_end.json() == {"events": [], "next_after": last_seq, "has_more": False}
    assert beyond.json() == {"events": [], "next_after": last_seq + 50, "has_more": False}


async def test_events_are_the_same_bytes_whichever_page_they_come_from(
    running: RunningApp, api_key: str
) -> None:
    generation_id = await finished(running, api_key)
    async with running.client(api_key) as client:
        whole = await all_events(client, generation_id)
        one = (
            await client.get(f"{API}/{generation_id}/events", params={"after": 2, "limit": 1})
        ).json()
    assert one["events"] == [whole[2]]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 1001},
        {"limit": 0},
        {"after": -1},
        {"after": "x"},
        {"limit": "many"},
        {"after": 2**63},  # one past PostgreSQL's bigint, which stores every seq
        {"after": "9" * 5000},
        {"limit": "9" * 5000},
        {"after": "1\x00"},
    ],
    ids=str,
)
async def test_bad_events_parameters_are_400(
    running: RunningApp, api_key: str, params: dict[str, Any]
) -> None:
    async with running.client(api_key) as client:
        generation_id = str((await create_via_api(client))["id"])
        response = await client.get(f"{API}/{generation_id}/events", params=params)
    assert_problem(response, 400)


async def test_events_after_the_largest_seq_postgresql_stores_are_an_empty_page(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        generation_id = str((await create_via_api(client))["id"])
        response = await client.get(f"{API}/{generation_id}/events", params={"after": 2**63 - 1})
    assert response.status_code == 200, response.text
    assert response.json() == {"events": [], "next_after": 2**63 - 1, "has_more": False}


async def test_events_accept_the_largest_page(running: RunningApp, api_key: str) -> None:
    async with running.client(api_key) as client:
        generation_id = str((await create_via_api(client))["id"])
        response = await client.get(f"{API}/{generation_id}/events", params={"limit": 1000})
    assert response.status_code == 200
    assert response.json()["events"][0]["type"] == "generation.queued"


# --- cancel --------------------------------------------------------------------------------


async def test_cancelling_a_queued_generation_ends_its_log_with_one_cancelled_event(
    app_factory: AppFactory, api_key: str
) -> None:
    async with app_factory(worker_concurrency=0) as app, app.client(api_key) as client:
        generation_id = str((await create_via_api(client))["id"])
        response = await client.post(f"{API}/{generation_id}/cancel")
        again = await client.post(f"{API}/{generation_id}/cancel")
        after = await state_via_api(client, generation_id)
        events = await all_events(client, generation_id)
    assert response.status_code == 202, response.text
    assert response.json() == {"id": generation_id, "status": "cancelled"}
    assert_problem(again, 409)
    assert after["status"] == "cancelled"
    assert after["finished_at"] is not None
    assert after["last_seq"] == len(events) == 2
    assert [event["type"] for event in events] == ["generation.queued", "generation.cancelled"]


async def test_a_cancelled_queued_generation_is_never_run_by_a_worker(
    app_factory: AppFactory, api_key: str
) -> None:
    async with app_factory(worker_concurrency=0) as app, app.client(api_key) as client:
        cancelled = str((await create_via_api(client))["id"])
        assert (await client.post(f"{API}/{cancelled}/cancel")).status_code == 202
        before = await all_events(client, cancelled)
    async with app_factory() as app, app.client(api_key) as client:
        # A worker claims the oldest queued run first: once a newer one is done, the
        # cancelled one would have been claimed already if it were claimable.
        later = str((await create_via_api(client))["id"])
        await wait_for_status(client, later, "succeeded")
        assert await all_events(client, cancelled) == before
        assert (await state_via_api(client, cancelled))["status"] == "cancelled"


async def test_concurrent_cancels_of_a_queued_generation_append_one_terminal_event(
    app_factory: AppFactory, api_key: str
) -> None:
    async with app_factory(worker_concurrency=0) as app, app.client(api_key) as client:
        generation_id = str((await create_via_api(client))["id"])
        responses = await asyncio.gather(
            *(client.post(f"{API}/{generation_id}/cancel") for _ in range(8))
        )
        events = await all_events(client, generation_id)
    assert sorted(r.status_code for r in responses) == [202] + [409] * 7
    assert [event["type"] for event in events] == ["generation.queued", "generation.cancelled"]


async def test_cancelling_a_finished_generation_is_409_and_changes_nothing(
    running: RunningApp, api_key: str
) -> None:
    generation_id = await finished(running, api_key)
    async with running.client(api_key) as client:
        before = await all_events(client, generation_id)
        response = await client.post(f"{API}/{generation_id}/cancel")
        after = await all_events(client, generation_id)
        current = await state_via_api(client, generation_id)
    body = assert_problem(response, 409)
    assert "succeeded" in body["detail"]
    assert after == before
    assert current["status"] == "succeeded"


async def test_cancelling_a_running_generation_stops_it_with_nothing_after_the_cancel(
    app_factory: AppFactory, api_key: str
) -> None:
    async with app_factory(offline_delay_s=0.05) as app, app.client(api_key) as client:
        generation_id = str((await create_via_api(client, BIG_SPEC))["id"])
        await wait_for_status(client, generation_id, "running")
        response = await client.post(f"{API}/{generation_id}/cancel")
        done = await wait_for_status(client, generation_id)
        events = await all_events(client, generation_id)
        files = (await client.get(f"{API}/{generation_id}/files")).json()["files"]
        # Let the worker try anything it still would, then look again.
        await asyncio.sleep(0.3)
        later = await all_events(client, generation_id)
    assert response.status_code == 202, response.text
    assert response.json() == {"id": generation_id, "status": "running"}
    assert done["status"] == "cancelled"
    assert done["finished_at"] is not None
    assert done["progress"] < 1.0
    types = [event["type"] for event in events]
    assert types[-1] == "generation.cancelled"
    assert sum(t in TERMINAL for t in types) == 1
    assert done["last_seq"] == len(events)
    assert [event["seq"] for event in events] == list(range(1, len(events) + 1))
    assert types.count("file.saved") < 20  # it stopped before writing everything
    assert all(file["seq"] < events[-1]["seq"] for file in files)
    assert later == events


# --- files ---------------------------------------------------------------------------------


async def test_files_list_matches_the_file_saved_events_and_serves_their_content(
    running: RunningApp, api_key: str
) -> None:
    generation_id = await finished(running, api_key)
    async with running.client(api_key) as client:
        listing = await client.get(f"{API}/{generation_id}/files")
        events = await all_events(client, generation_id)
        assert listing.status_code == 200, listing.text
        files = listing.json()["files"]
        contents = {
            file["path"]: await client.get(f"{API}/{generation_id}/files/{file['path']}")
            for file in files
        }
    saved = {event["seq"]: event for event in events if event["type"] == "file.saved"}
    spec = Spec.model_validate(SPEC)
    assert len(files) == len(saved) == sum(len(render_phase(spec, st)) for st in STAGES)
    assert [file["path"] for file in files] == sorted(file["path"] for file in files)
    for file in files:
        assert set(file) == {"path", "size", "sha256", "language", "seq"}
        event = saved[file["seq"]]
        assert event["data"]["path"] == file["path"]
        assert event["data"]["sha256"] == file["sha256"]
        assert event["data"]["size"] == file["size"]
        response = contents[file["path"]]
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert hashlib.sha256(response.content).hexdigest() == file["sha256"]
        assert len(response.content) == file["size"]
    assert "app/models/user.py" in contents


async def test_an_unknown_file_path_is_404(running: RunningApp, api_key: str) -> None:
    generation_id = await finished(running, api_key)
    async with running.client(api_key) as client:
        missing = await client.get(f"{API}/{generation_id}/files/app/models/nobody.py")
        directory = await client.get(f"{API}/{generation_id}/files/app/models")
    assert_problem(missing, 404)
    assert_problem(directory, 404)


@pytest.mark.parametrize("suffix", ["README.md%00", "app%00/main.py", "%00"])
async def test_a_file_path_with_a_nul_is_400_naming_the_path(
    running: RunningApp, api_key: str, suffix: str
) -> None:
    generation_id = await finished(running, api_key)
    async with running.client(api_key) as client:
        response = await client.get(f"{API}/{generation_id}/files/{suffix}")
    body = assert_problem(response, 400)
    assert "path" in body["detail"]
    assert "NUL" in body["detail"]


async def test_a_queued_generation_has_no_files(app_factory: AppFactory, api_key: str) -> None:
    async with app_factory(worker_concurrency=0) as app, app.client(api_key) as client:
        generation_id = str((await create_via_api(client))["id"])
        response = await client.get(f"{API}/{generation_id}/files")
    assert response.status_code == 200
    assert response.json() == {"files": []}


# --- bad input -----------------------------------------------------------------------------


def _body(**overrides: Any) -> bytes:
    return json.dumps({"spec": SPEC, **overrides}).encode()


def _spec_body(**overrides: Any) -> bytes:
    return json.dumps({"spec": {**SPEC, **overrides}}).encode()


def _entities_body(*entities: Any) -> bytes:
    return json.dumps({"spec": {"project": "shop", "entities": list(entities)}}).encode()


BAD_BODIES: dict[str, bytes] = {
    "malformed json": b'{"spec": {"project": ',
    "not json at all": b"hello",
    "empty body": b"",
    "not utf-8": b'{"spec": "\xff\xfe"}',
    "body is a list": b"[1, 2, 3]",
    "body is a string": b'"spec"',
    "body is null": b"null",
    "body is a number": b"42",
    "missing spec": b"{}",
    "spec is a string": _body(spec="make me an app"),
    "entities is a string": _spec_body(entities="User, Order"),
    "entities is empty": _spec_body(entities=[]),
    "project is a number": _spec_body(project=7),
    "project is empty": _spec_body(project=""),
    "fields is a list": _entities_body({"name": "User", "fields": ["email"]}),
    "fields is empty": _entities_body({"name": "User", "fields": {}}),
    "field type is a number": _entities_body({"name": "User", "fields": {"age": 5}}),
    "unknown field in spec": _spec_body(colour="red"),
    "unknown field in entity": _entities_body({"name": "User", "fields": {"a": "str"}, "x": 1}),
    "unknown top-level field": _body(priority="high"),
    "unknown field type": _entities_body({"name": "User", "fields": {"email": "string"}}),
    "duplicate entity names": _entities_body(
        {"name": "User", "fields": {"email": "str"}}, {"name": "User", "fields": {"age": "int"}}
    ),
    "reference to a missing entity": _entities_body({"name": "Order", "fields": {"user": "User"}}),
    "ref: to a missing entity": _entities_body({"name": "Order", "fields": {"user": "ref:User"}}),
    "entity name not an identifier": _entities_body({"name": "1User", "fields": {"a": "str"}}),
    "entity name with a space": _entities_body({"name": "My User", "fields": {"a": "str"}}),
    "field name not an identifier": _entities_body({"name": "User", "fields": {"e-mail": "str"}}),
    "field name is a keyword": _entities_body({"name": "User", "fields": {"class": "str"}}),
    "unknown provider": _body(provider="openai"),
    "provider is a number": _body(provider=1),
    "empty model": _body(model=""),
    # PostgreSQL stores no NUL in text (nor \u0000 in jsonb): refused at the door, never a
    # 500 on insert or a run that fails later with the database's own words.
    "model with a NUL": _body(model="m\u0000"),
    "description with a NUL": _spec_body(description="a shop\u0000"),
    "entity description with a NUL": _entities_body(
        {"name": "User", "fields": {"email": "str"}, "description": "\u0000"}
    ),
    "project with a NUL": _spec_body(project="shop\u0000"),
    "entity name with a NUL": _entities_body({"name": "User\u0000", "fields": {"a": "str"}}),
    "field name with a NUL": _entities_body({"name": "User", "fields": {"a\u0000": "str"}}),
    "field type with a NUL": _entities_body({"name": "User", "fields": {"a": "str\u0000"}}),
    "unknown field named with a NUL": _body(**{"x\u0000": 1}),
    # A trailing newline slipped through identifier checks written with `$`.
    "entity name with a newline": _entities_body({"name": "User\n", "fields": {"a": "str"}}),
    "field name with a newline": _entities_body({"name": "User", "fields": {"email\n": "str"}}),
    "project with an inner newline": _spec_body(project="sh\nop"),
    "deeply nested json": b'{"spec": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
}


@pytest.mark.parametrize("content", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
async def test_bad_input_is_400_with_a_json_problem_and_creates_nothing(
    running: RunningApp, api_key: str, content: bytes
) -> None:
    async with running.client(api_key) as client:
        response = await client.post(
            API, content=content, headers={"Content-Type": "application/json"}
        )
        listing = await client.get(API)
    assert_problem(response, 400)
    assert listing.json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"spec": SPEC, "model": "m\u0000"}, "model"),
        ({"spec": {**SPEC, "description": "\u0000"}}, "spec.description"),
        (
            {
                "spec": {
                    "project": "p",
                    "entities": [{"name": "U", "fields": {"a": "str"}, "description": "\u0000"}],
                }
            },
            "spec.entities[0].description",
        ),
    ],
    ids=["model", "description", "entity description"],
)
async def test_a_nul_in_a_text_field_is_400_naming_the_field(
    running: RunningApp, api_key: str, body: dict[str, Any], field: str
) -> None:
    async with running.client(api_key) as client:
        response = await client.post(API, json=body)
    problem = assert_problem(response, 400)
    assert field in problem["detail"], problem["detail"]
    assert "NUL" in problem["detail"]


async def test_gemini_without_a_key_is_400_naming_the_missing_key(
    running: RunningApp, api_key: str
) -> None:
    async with running.client(api_key) as client:
        response = await client.post(API, json={"spec": SPEC, "provider": "gemini"})
        listing = await client.get(API)
    body = assert_problem(response, 400)
    assert "GEMINI_API_KEY" in body["detail"]
    assert listing.json()["items"] == []


def _sized_spec(description_chars: int) -> dict[str, Any]:
    return {
        "project": "big",
        "description": "d" * min(description_chars, 4000),
        "entities": [
            {"name": f"E{n}", "fields": {"a": "str"}, "description": "e" * 2000} for n in range(3)
        ],
    }


async def test_a_body_over_the_limit_is_413(app_factory: AppFactory, api_key: str) -> None:
    content = json.dumps({"spec": _sized_spec(4000)}).encode()
    assert 9_000 < len(content) < 12_000
    async with app_factory(max_body_bytes=2048) as app, app.client(api_key) as client:
        response = await client.post(
            API, content=content, headers={"Content-Type": "application/json"}
        )
        listing = await client.get(API)
    assert_problem(response, 413)
    assert listing.json()["items"] == []


async def test_a_chunked_body_over_the_limit_is_413(app_factory: AppFactory, api_key: str) -> None:
    content = json.dumps({"spec": _sized_spec(4000)}).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(content), 1000):
            yield content[start : start + 1000]

    async with app_factory(max_body_bytes=2048) as app, app.client(api_key) as client:
        response = await client.post(
            API, content=chunks(), headers={"Content-Type": "application/json"}
        )
        listing = await client.get(API)
    assert "content-length" not in response.request.headers
    assert_problem(response, 413)
    assert listing.json()["items"] == []


async def test_a_body_under_the_limit_is_accepted(app_factory: AppFactory, api_key: str) -> None:
    async with app_factory(max_body_bytes=2048) as app, app.client(api_key) as client:
        response = await client.post(API, json={"spec": SPEC})
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("GET", "/events"),
        ("POST", "/cancel"),
        ("GET", "/files"),
        ("GET", "/files/app/main.py"),
        ("GET", "/stream"),
    ],
)
@pytest.mark.parametrize(
    "generation_id", ["not-a-uuid", "12345", "5f0c2b8e-7d4a-4c1e-9b3f-2a6d8e1c0f47"]
)
async def test_an_unknown_or_malformed_id_is_404(
    running: RunningApp, api_key: str, method: str, suffix: str, generation_id: str
) -> None:
    async with running.client(api_key) as client:
        response = await client.request(method, f"{API}/{generation_id}{suffix}")
    assert_problem(response, 404)


async def test_over_a_quota_a_create_is_429_with_retry_after_and_a_key_may_carry_its_own(
    app_factory: AppFactory, pool: Pool
) -> None:
    default_key = await keys.create_key(pool, "alice")
    roomy_key = await keys.create_key(pool, "bob", quotas=keys.Quotas(max_active_runs=3))
    async with (
        app_factory(worker_concurrency=0, owner_max_active_runs=1) as running,
        running.client(default_key) as alice,
        running.client(roomy_key) as bob,
    ):
        await create_via_api(alice)
        refused = await alice.post(API, json={"spec": SPEC})
        for _ in range(3):
            await create_via_api(bob)
        bobs_fourth = await bob.post(API, json={"spec": SPEC})

    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1
    body = refused.json()
    assert body["status"] == 429
    assert "alice has 1 generation queued or running" in body["detail"]
    assert bobs_fourth.status_code == 429


async def test_the_openapi_document_lists_the_quota_answers(running: RunningApp) -> None:
    async with running.client() as client:
        paths = (await client.get("/schema/openapi.json")).json()["paths"]
    create = paths["/api/generations"]["post"]["responses"]
    stream = paths["/api/generations/{generation_id}/stream"]["get"]["responses"]
    assert "429" in create
    assert {"429", "503"} <= set(stream)


# --- retry -----------------------------------------------------------------------------------


async def test_a_cancelled_run_retried_resumes_at_its_first_unfinished_phase_to_success(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    """Cancelled after its first phase, retried: the log goes on (generation.retried, then a
    worker's generation.resumed), the completed phase is not run again, its files are kept,
    and the whole log still proves itself: one chain, the row what the log says."""
    async with app_factory(offline_delay_s=0.02) as app, app.client(api_key) as client:
        generation_id = str((await create_via_api(client))["id"])

        async def first_phase_done() -> bool:
            events = await all_events(client, generation_id)
            return any(event["type"] == "phase.completed" for event in events)

        await wait_until(first_phase_done, "a completed phase", 30)
        assert (await client.post(f"{API}/{generation_id}/cancel")).status_code == 202
        await wait_for_status(client, generation_id, "cancelled")
        before = await all_events(client, generation_id)
        retried = await client.post(f"{API}/{generation_id}/retry")
        await wait_for_status(client, generation_id, "succeeded", seconds=60)
        events = await all_events(client, generation_id)
        state = await state_via_api(client, generation_id)
        files = (await client.get(f"{API}/{generation_id}/files")).json()["files"]
        again = await client.post(f"{API}/{generation_id}/retry")
    assert retried.status_code == 202, retried.text
    assert retried.json() == {"id": generation_id, "status": "queued"}
    assert events[: len(before)] == before, "the first attempt stays in the log"
    kinds = [event["type"] for event in events]
    assert kinds.count("generation.cancelled") == kinds.count("generation.retried") == 1
    assert kinds[-1] == "generation.succeeded"
    cut = len(before)
    retry = events[cut]
    assert (retry["type"], retry["status"]) == ("generation.retried", "queued")
    kept = retry["data"]["completed_phases"]
    assert kept == [e["stage"] for e in before if e["type"] == "phase.completed"]
    assert retry["data"]["after"] == "cancelled"
    assert events[cut + 1]["type"] == "generation.resumed"
    started_again = [e["stage"] for e in events[cut:] if e["type"] == "phase.started"]
    assert started_again
    assert not set(kept) & set(started_again), "a completed phase is not run again"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"]["count"] == len(events)
    assert (state["status"], state["error"], state["last_seq"]) == ("succeeded", None, len(events))
    assert {f["path"] for f in files} == {
        e["data"]["path"] for e in events if e["type"] == "file.saved"
    }
    assert_problem(again, 409)
    async with pool.acquire() as conn:
        assert (await event_log.check_chains(conn, [UUID(generation_id)])).breaks == []
        assert await projections.select_log_defects(conn) == []
        assert await projections.select_differences(conn) == []


async def test_a_failed_run_retried_fails_again_and_its_row_has_the_new_error(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    closed = free_socket()  # a Gemini endpoint that refuses every connection
    unreachable = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    async with (
        app_factory(
            gemini_api_key=SecretStr("test-key"), gemini_base_url=unreachable, gemini_attempts=1
        ) as app,
        app.client(api_key) as client,
    ):
        generation_id = str((await create_via_api(client, provider="gemini"))["id"])
        await wait_for_status(client, generation_id, "failed")
        retried = await client.post(f"{API}/{generation_id}/retry")
        await wait_for_status(client, generation_id, "failed")
        events = await all_events(client, generation_id)
        state = await state_via_api(client, generation_id)
    assert retried.status_code == 202
    kinds = [event["type"] for event in events]
    first = kinds.index("generation.failed")
    assert kinds[first + 1] == "generation.retried"
    assert kinds.count("generation.failed") == 2
    assert kinds[-1] == "generation.failed"
    assert state["error"] == events[-1]["data"]["error"]
    async with pool.acquire() as conn:
        assert await projections.select_differences(conn) == []
        assert await projections.select_log_defects(conn) == []


async def test_retry_is_409_unless_the_run_failed_or_was_cancelled_and_404_for_another_owner(
    app_factory: AppFactory, api_key: str, make_key: KeyFactory
) -> None:
    bob = await make_key("bob")
    async with app_factory(worker_concurrency=0) as app, app.client(api_key) as client:
        queued = str((await create_via_api(client))["id"])
        still_queued = await client.post(f"{API}/{queued}/retry")
        async with app.client(bob) as other:
            not_bobs = await other.post(f"{API}/{queued}/retry")
        events = await all_events(client, queued)
    async with app_factory() as app, app.client(api_key) as client:
        done = str((await create_via_api(client))["id"])
        await wait_for_status(client, done, "succeeded")
        succeeded = await client.post(f"{API}/{done}/retry")
    assert "queued: only a failed or cancelled run" in assert_problem(still_queued, 409)["detail"]
    assert "succeeded: there is nothing to retry" in assert_problem(succeeded, 409)["detail"]
    assert_problem(not_bobs, 404)
    assert [event["type"] for event in events] == ["generation.queued"]


async def test_a_retry_counts_against_the_owners_active_runs(
    app_factory: AppFactory, api_key: str
) -> None:
    async with (
        app_factory(worker_concurrency=0, owner_max_active_runs=1) as app,
        app.client(api_key) as client,
    ):
        cancelled = str((await create_via_api(client))["id"])
        await client.post(f"{API}/{cancelled}/cancel")
        await create_via_api(client)  # the one active run allowed
        refused = await client.post(f"{API}/{cancelled}/retry")
        events = await all_events(client, cancelled)
    assert_problem(refused, 429)
    assert refused.headers["Retry-After"]
    assert [event["type"] for event in events][-1] == "generation.cancelled"


async def test_a_retried_run_gets_a_fresh_budget_of_claims(
    app_factory: AppFactory, api_key: str, pool: Pool
) -> None:
    """A run that used up its claims (workers kept dying) may be retried: the budget of
    GENSTREAM_RUN_ATTEMPTS_MAX counts from the retry."""
    async with app_factory(worker_concurrency=0) as app, app.client(api_key) as client:
        generation_id = str((await create_via_api(client))["id"])
        await client.post(f"{API}/{generation_id}/cancel")
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE generations SET attempt = 50 WHERE id = $1", UUID(generation_id)
            )
        assert (await client.post(f"{API}/{generation_id}/retry")).status_code == 202
    async with app_factory(run_attempts_max=2) as app, app.client(api_key) as client:
        state = await wait_for_status(client, generation_id)
        events = await all_events(client, generation_id)
    assert state["status"] == "succeeded", state["error"]
    assert events[2]["data"]["attempt"] == 51
