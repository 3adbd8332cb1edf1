from __future__ import annotations

from service.store.db import Pool
from service.store.migrate import head_revisions
from tests.conftest import RunningApp


async def test_healthz_answers_200_without_a_key(running: RunningApp) -> None:
    async with running.client() as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_on_a_migrated_database(running: RunningApp) -> None:
    async with running.client() as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"


async def test_readyz_is_503_when_the_schema_is_behind_and_200_once_restored(
    running: RunningApp, pool: Pool
) -> None:
    async with pool.acquire() as conn:
        current = await conn.fetchval("SELECT version_num FROM alembic_version")
    assert frozenset({current}) == head_revisions()
    async with running.client() as client:
        async with pool.acquire() as conn:
            await conn.execute("UPDATE alembic_version SET version_num = '0005'")
        behind = await client.get("/readyz")
        async with pool.acquire() as conn:
            await conn.execute("UPDATE alembic_version SET version_num = $1", current)
        restored = await client.get("/readyz")
    assert behind.status_code == 503
    body = behind.json()
    assert body["current"] == ["0005"]
    assert body["head"] == sorted(head_revisions())
    assert "head" in body["detail"]
    assert restored.status_code == 200


async def test_readyz_stays_200_when_a_newer_release_migrated_the_database(
    running: RunningApp, pool: Pool
) -> None:
    """A rolling upgrade: the new release's migration ran while this process serves. It
    keeps serving until replaced; a balancer acting on /readyz must not take it out."""
    async with pool.acquire() as conn:
        current = await conn.fetchval("SELECT version_num FROM alembic_version")
    async with running.client() as client:
        async with pool.acquire() as conn:
            await conn.execute("UPDATE alembic_version SET version_num = '0099_from_the_future'")
        ahead = await client.get("/readyz")
        async with pool.acquire() as conn:
            await conn.execute("UPDATE alembic_version SET version_num = $1", current)
        at_head = await client.get("/readyz")
    assert ahead.status_code == 200
    assert (ahead.json()["status"], ahead.json()["schema"]) == ("ready", "ahead")
    assert at_head.json()["schema"] == "at head"


async def test_readyz_is_503_without_an_alembic_version_table(
    running: RunningApp, pool: Pool
) -> None:
    async with running.client() as client:
        async with pool.acquire() as conn:
            await conn.execute("ALTER TABLE alembic_version RENAME TO alembic_version_away")
        missing = await client.get("/readyz")
        async with pool.acquire() as conn:
            await conn.execute("ALTER TABLE alembic_version_away RENAME TO alembic_version")
        restored = await client.get("/readyz")
    assert missing.status_code == 503
    assert missing.json()["current"] == []
    assert restored.status_code == 200


async def test_health_endpoints_do_not_need_a_key_and_ignore_a_bad_one(
    running: RunningApp,
) -> None:
    async with running.client("gsk_not-a-real-key") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


async def test_schema_serves_the_openapi_document(running: RunningApp) -> None:
    async with running.client() as client:
        root = await client.get("/schema")
        document = await client.get("/schema/openapi.json")
    assert root.status_code == 200
    assert document.status_code == 200
    paths = document.json()["paths"]
    assert "/api/generations" in paths
    assert "/api/generations/{generation_id}/stream" in paths


async def test_the_openapi_document_names_how_each_operation_is_authorized(
    running: RunningApp,
) -> None:
    async with running.client() as client:
        document = (await client.get("/schema/openapi.json")).json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["apiKey"]["type"] == "http"
    assert schemes["apiKey"]["scheme"] == "bearer"
    assert (schemes["streamToken"]["type"], schemes["streamToken"]["in"]) == ("apiKey", "query")
    assert schemes["streamToken"]["name"] == "token"
    assert document["security"] == [{"apiKey": []}]  # every operation, unless it says otherwise
    paths = document["paths"]
    stream = paths["/api/generations/{generation_id}/stream"]["get"]
    assert stream["security"] == [{"apiKey": []}, {"streamToken": []}]
    assert paths["/healthz"]["get"]["security"] == [{}]
    assert paths["/readyz"]["get"]["security"] == [{}]
    assert "security" not in paths["/api/generations"]["post"]
