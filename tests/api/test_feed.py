from __future__ import annotations

import base64
from typing import Any
from uuid import uuid4

import pytest

from service.api.cursors import encode_feed_cursor
from service.store.event_log import FeedPosition
from tests.conftest import AppFactory, KeyFactory
from tests.helpers import SPEC


async def test_an_admin_pages_through_every_owners_events_with_the_cursor(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    alice, bob, admin = (
        await make_key("alice"),
        await make_key("bob"),
        await make_key("ops", is_admin=True),
    )
    async with app_factory(worker_concurrency=0) as running:
        created: list[str] = []
        for key in (alice, bob):
            async with running.client(key) as client:
                response = await client.post("/api/generations", json={"spec": SPEC})
                assert response.status_code == 201, response.text
                created.append(response.json()["id"])
        seen: list[dict[str, Any]] = []
        cursor = ""
        async with running.client(admin) as client:
            while True:
                response = await client.get("/api/events", params={"after": cursor, "limit": 1})
                assert response.status_code == 200, response.text
                body = response.json()
                if not body["events"]:
                    assert body["next_cursor"] == (cursor or encode_feed_cursor(FeedPosition()))
                    break
                seen += body["events"]
                cursor = body["next_cursor"]
    queued = [(event["generation_id"], event["type"]) for event in seen]
    assert queued == [(generation_id, "generation.queued") for generation_id in created]
    assert set(seen[0]) == {
        "generation_id", "seq", "type", "status", "stage", "progress", "message", "timestamp",
        "data", "chain",
    }  # fmt: skip


async def test_the_feed_is_for_admin_keys_only(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    async with app_factory(worker_concurrency=0) as running:
        async with running.client(await make_key("alice")) as client:
            forbidden = await client.get("/api/events")
        async with running.client() as client:
            anonymous = await client.get("/api/events")
        async with running.client(await make_key("ops", is_admin=True)) as client:
            garbage = await client.get("/api/events", params={"after": "not a cursor"})
            too_many = await client.get("/api/events", params={"limit": 5000})
    assert forbidden.status_code == 403
    assert "admin" in forbidden.json()["detail"]
    assert anonymous.status_code == 401
    assert garbage.status_code == 400
    assert too_many.status_code == 400


def _raw_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "cursor",
    [
        _raw_cursor(f"{2**63}:{uuid4()}:1"),
        _raw_cursor(f"1:{uuid4()}:{2**63}"),
        "\x00",
    ],
    ids=["tx_id past bigint", "seq past bigint", "nul"],
)
async def test_a_cursor_out_of_range_is_400(
    app_factory: AppFactory, make_key: KeyFactory, cursor: str
) -> None:
    async with (
        app_factory(worker_concurrency=0) as running,
        running.client(await make_key("ops", is_admin=True)) as client,
    ):
        response = await client.get("/api/events", params={"after": cursor})
    assert response.status_code == 400, response.text
    assert response.json()["status"] == 400
