from __future__ import annotations

import asyncio
import time
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest

from service.access import keys, tokens
from service.settings import Settings
from service.store.db import Pool
from tests.conftest import AppFactory, KeyFactory, RunningApp
from tests.helpers import API, SPEC, create_via_api, wait_for_status


async def finished(running: RunningApp, key: str) -> dict[str, Any]:
    async with running.client(key) as client:
        created = await create_via_api(client)
        await wait_for_status(client, str(created["id"]), "succeeded")
    return created


async def stream_status(
    client: httpx.AsyncClient, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any] | None]:
    """The status of a stream request; reads the body only when it is not an event stream."""
    async with asyncio.timeout(10), client.stream("GET", url, **kwargs) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, None
        await response.aread()
        return response.status_code, (response.json() if response.content else None)


def endpoints(generation_id: str) -> list[tuple[str, str]]:
    base = f"{API}/{generation_id}"
    return [
        ("GET", API),
        ("POST", API),
        ("GET", base),
        ("GET", f"{base}/events"),
        ("POST", f"{base}/cancel"),
        ("GET", f"{base}/files"),
        ("GET", f"{base}/files/app/main.py"),
        ("GET", f"{base}/stream"),
    ]


def assert_unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401, (response.request.url, response.text)
    body = response.json()
    assert body["status"] == 401
    assert body["detail"]
    assert response.headers["www-authenticate"].lower().startswith("bearer")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer gsk_this-key-was-never-issued"},
        {"Authorization": "Bearer not-even-shaped-like-a-key"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6c2VjcmV0"},
        {"Authorization": "Token gsk_abc"},
    ],
    ids=["none", "unknown key", "garbage", "scheme only", "basic", "token scheme"],
)
async def test_every_api_endpoint_is_401_without_a_valid_bearer_key(
    running: RunningApp, api_key: str, headers: dict[str, str]
) -> None:
    created = await finished(running, api_key)
    async with running.client() as client:
        for method, url in endpoints(str(created["id"])):
            if url.endswith("/stream"):
                async with client.stream(method, url, headers=headers) as response:
                    await response.aread()
            else:
                response = await client.request(
                    method, url, headers=headers, json={"spec": SPEC} if method == "POST" else None
                )
            assert_unauthorized(response)
        async with running.client(api_key) as owner:
            listing = (await owner.get(API)).json()
    assert len(listing["items"]) == 1  # nothing was created by the refused POSTs


async def test_the_bearer_scheme_is_case_insensitive_and_the_right_key_works(
    running: RunningApp, api_key: str
) -> None:
    async with running.client() as client:
        response = await client.get(API, headers={"Authorization": f"bearer {api_key}"})
    assert response.status_code == 200


async def test_another_owners_generation_is_404_everywhere_never_403(
    running: RunningApp, api_key: str, make_key: KeyFactory
) -> None:
    created = await finished(running, api_key)
    generation_id = str(created["id"])
    bob = await make_key("bob")
    async with running.client(bob) as client:
        for method, url in endpoints(generation_id)[2:]:
            if url.endswith("/stream"):
                status, body = await stream_status(client, url)
            else:
                response = await client.request(method, url)
                status, body = response.status_code, response.json()
            assert status == 404, (url, status, body)
            assert body is not None
            assert body["status"] == 404
        listing = (await client.get(API)).json()
        unknown = await client.get(f"{API}/{uuid4()}")
    assert listing == {"items": [], "next_cursor": None}
    # Indistinguishable from a generation that does not exist at all.
    assert unknown.status_code == 404
    async with running.client(api_key) as owner:
        mine = await owner.get(f"{API}/{generation_id}")
        cancel = await owner.post(f"{API}/{generation_id}/cancel")
    assert mine.status_code == 200
    assert cancel.status_code == 409  # the owner learns it is finished; bob learned nothing


async def test_another_owner_cannot_cancel_a_queued_generation(
    app_factory: AppFactory, api_key: str, make_key: KeyFactory
) -> None:
    bob = await make_key("bob")
    async with app_factory(worker_concurrency=0) as app:
        async with app.client(api_key) as alice:
            generation_id = str((await create_via_api(alice))["id"])
        async with app.client(bob) as client:
            response = await client.post(f"{API}/{generation_id}/cancel")
        async with app.client(api_key) as alice:
            state = (await alice.get(f"{API}/{generation_id}")).json()
            events = (await alice.get(f"{API}/{generation_id}/events")).json()["events"]
    assert response.status_code == 404
    assert state["status"] == "queued"
    assert [event["type"] for event in events] == ["generation.queued"]


async def test_each_owner_lists_only_their_own_generations(
    app_factory: AppFactory, api_key: str, make_key: KeyFactory
) -> None:
    bob = await make_key("bob")
    alice_too = await make_key("alice")
    async with app_factory(worker_concurrency=0) as app:
        async with app.client(api_key) as client:
            alices = {str((await create_via_api(client))["id"]) for _ in range(2)}
        async with app.client(bob) as client:
            bobs = {str((await create_via_api(client))["id"])}
            bob_sees = {item["id"] for item in (await client.get(API)).json()["items"]}
        async with app.client(alice_too) as client:
            alice_sees = {item["id"] for item in (await client.get(API)).json()["items"]}
    assert bob_sees == bobs
    assert alice_sees == alices  # a second key of the same owner sees the owner's generations


async def test_a_stream_token_opens_its_own_generation_only(
    running: RunningApp, api_key: str
) -> None:
    first = await finished(running, api_key)
    second = await finished(running, api_key)
    async with running.client() as client:
        own, _ = await stream_status(
            client, str(first["stream_url"]), params={"token": first["stream_token"]}
        )
        other, body = await stream_status(
            client, str(second["stream_url"]), params={"token": first["stream_token"]}
        )
    assert own == 200
    assert other == 401
    assert body is not None
    assert body["status"] == 401


async def test_a_stream_token_is_not_accepted_anywhere_but_the_stream(
    running: RunningApp, api_key: str
) -> None:
    created = await finished(running, api_key)
    generation_id = str(created["id"])
    token = {"token": str(created["stream_token"])}
    async with running.client() as client:
        for method, url in endpoints(generation_id)[:-1]:
            response = await client.request(method, url, params=token)
            assert_unauthorized(response)
        bearer = await client.get(
            f"{API}/{generation_id}", headers={"Authorization": f"Bearer {token['token']}"}
        )
    assert_unauthorized(bearer)


async def test_an_expired_stream_token_is_refused(
    running: RunningApp, api_key: str, settings: Settings, pool: Pool
) -> None:
    created = await finished(running, api_key)
    generation_id = UUID(str(created["id"]))
    secret = settings.stream_token_secret
    assert secret == "test-secret"
    key_id = (await keys.authenticate(pool, api_key)).key_id
    expired = tokens.issue(secret, generation_id, 3600, key_id, now=time.time() - 7200)
    fresh = tokens.issue(secret, generation_id, 3600, key_id)
    async with running.client() as client:
        refused, body = await stream_status(
            client, str(created["stream_url"]), params={"token": expired}
        )
        accepted, _ = await stream_status(
            client, str(created["stream_url"]), params={"token": fresh}
        )
    assert refused == 401
    assert body is not None
    assert "expired" in body["detail"]
    assert accepted == 200  # same secret, same generation: only the expiry differs


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "123",
        "123.",
        "9999999999.bogus-signature",
        "\u00b2.c2ln",
        "-1.c2ln",
        "9" * 5000 + ".c2ln",
        "9999999999.c2ln\u00e9",
        "9999999999.c2ln\x00",
    ],
    ids=[
        "empty",
        "garbage",
        "no-dot",
        "no-signature",
        "bad-signature",
        "unicode-digit",
        "neg",
        "5000-digit-expiry",
        "non-ascii-signature",
        "nul",
    ],
)
async def test_a_malformed_stream_token_is_401_never_a_server_error(
    running: RunningApp, api_key: str, token: str
) -> None:
    created = await finished(running, api_key)
    async with running.client() as client:
        status, body = await stream_status(
            client, str(created["stream_url"]), params={"token": token}
        )
    assert status in (400, 401), body  # 400: a NUL, refused before anything reads the token
    assert body is not None
    assert body["status"] == status


async def test_an_api_key_is_never_accepted_in_a_url(running: RunningApp, api_key: str) -> None:
    created = await finished(running, api_key)
    generation_id = str(created["id"])
    async with running.client() as client:
        status, body = await stream_status(
            client, str(created["stream_url"]), params={"token": api_key}
        )
        for method, url in endpoints(generation_id)[:-1]:
            response = await client.request(method, url, params={"token": api_key})
            assert_unauthorized(response)
            response = await client.request(method, url, params={"api_key": api_key})
            assert_unauthorized(response)
    assert status == 401
    assert body is not None
    assert "URL" in body["detail"]
    # Not even alongside a valid header: a key in a URL is refused, not silently ignored.
    async with running.client(api_key) as client:
        both, _ = await stream_status(client, str(created["stream_url"]), params={"token": api_key})
        header_only, _ = await stream_status(client, str(created["stream_url"]))
    assert both == 401
    assert header_only == 200


async def test_revoking_a_key_ends_the_stream_tokens_issued_through_it(
    app_factory: AppFactory, pool: Pool
) -> None:
    key = await keys.create_key(pool, "alice")
    key_id = (await keys.authenticate(pool, key)).key_id
    async with app_factory(worker_concurrency=0) as running, running.client(key) as client:
        created = await create_via_api(client)
        url = str(created["stream_url"])
        token = str(created["stream_token"])
        refreshed = (await client.post(f"{url.removesuffix('/stream')}/stream-token")).json()
        before, _ = await stream_status(client, url, params={"token": token})
        await keys.revoke_key(pool, key_id)
        after, body = await stream_status(client, url, params={"token": token})
        after_refresh, _ = await stream_status(
            client, url, params={"token": refreshed["stream_token"]}
        )

    assert before == 200
    assert (after, after_refresh) == (401, 401)
    assert body is not None
    assert "revoked or expired" in body["detail"]
