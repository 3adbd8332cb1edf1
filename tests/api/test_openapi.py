"""``api/openapi.py``: every operation documents its error answers in the shape the service
gives them, and the service gives them (a sample, checked against the running service)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from tests.conftest import AppFactory, KeyFactory

METHODS = ("get", "post", "put", "delete", "patch")


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, item[method])
        for path, item in document["paths"].items()
        for method in METHODS
        if method in item
    ]


def problem_ref(response: dict[str, Any]) -> str | None:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    ref: str | None = schema.get("$ref")
    return ref


async def test_every_error_answer_is_documented_as_a_problem_where_it_can_happen(
    app_factory: AppFactory,
) -> None:
    async with app_factory(worker_concurrency=0) as running, running.client() as client:
        document = (await client.get("/schema/openapi.json")).json()

    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"status", "detail"}
    assert "errors" in problem["properties"]
    for path, method, operation in operations(document):
        where = f"{method.upper()} {path}"
        responses = operation["responses"]
        errors = {status: r for status, r in responses.items() if status.startswith(("4", "5"))}
        assert "400" in errors, where
        for status, response in errors.items():
            if (path, status) == ("/readyz", "503"):
                continue  # readiness has its own body
            assert problem_ref(response) == "#/components/schemas/Problem", (where, status)
        public = operation.get("security") == [{}]
        assert ("401" in errors) is not public, where
        assert ("404" in errors) is ("{generation_id}" in path), where
        assert ("403" in errors) is (path in ("/api/events", "/metrics")), where
        assert ("503" in errors) is (path != "/healthz"), where
    # Litestar's own exception shape appears nowhere.
    assert "status_code" not in str(document["components"]["schemas"])


async def test_the_documented_errors_are_the_ones_the_service_gives(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    key = await make_key("alice")
    async with app_factory(worker_concurrency=0) as running:
        async with running.client() as anonymous:
            unauthorized = await anonymous.get("/api/generations")
        async with running.client(key) as client:
            missing = await client.get(f"/api/generations/{uuid4()}")
            forbidden = await client.get("/metrics")
            invalid = await client.get("/api/generations", params={"limit": "many"})
            too_big = await client.post(
                "/api/generations", content=b"{" + b" " * 300_000 + b"}",
                headers={"content-type": "application/json"},
            )  # fmt: skip
    for response, status in (
        (unauthorized, 401), (missing, 404), (forbidden, 403), (invalid, 400), (too_big, 413),
    ):  # fmt: skip
        assert response.status_code == status, response.text
        body = response.json()
        assert body["status"] == status
        assert isinstance(body["detail"], str)
        assert set(body) <= {"status", "detail", "errors"}
