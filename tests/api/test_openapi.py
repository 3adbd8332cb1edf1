"""``api/openapi.py``: every operation documents its error answers in the shape the service
gives them, and the service gives them (a sample, checked against the running service)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import jsonschema_rs

from service.events import EventType
from tests.conftest import AppFactory, KeyFactory
from tests.helpers import (
    API,
    SMALL_SPEC,
    create_via_api,
    events_via_api,
    wait_for_status,
)

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


# --- bodies, examples, events ----------------------------------------------------------------


def validator(document: dict[str, Any], schema: dict[str, Any]) -> jsonschema_rs.Validator:
    """``schema`` checked with the document's components (its ``$ref``s resolve there)."""
    return jsonschema_rs.validator_for({**schema, "components": document["components"]})


async def served_document(app_factory: AppFactory) -> dict[str, Any]:
    async with app_factory(worker_concurrency=0) as running, running.client() as client:
        document: dict[str, Any] = (await client.get("/schema/openapi.json")).json()
    return document


async def test_every_operation_has_a_summary_a_description_and_an_example(
    app_factory: AppFactory,
) -> None:
    document = await served_document(app_factory)
    for path, method, operation in operations(document):
        where = f"{method.upper()} {path}"
        assert operation.get("summary"), where
        assert operation.get("description"), where
        assert operation.get("operationId"), where
        success = next(r for code, r in operation["responses"].items() if code.startswith("2"))
        (media_type, media), *_ = success["content"].items()
        assert "example" in media or media_type == "application/zip", where


async def test_every_example_fits_the_schema_of_its_body(app_factory: AppFactory) -> None:
    document = await served_document(app_factory)
    checked = 0
    for _path, _method, operation in operations(document):
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None:
            validator(document, body["schema"]).validate(body["example"])
            checked += 1
        for code, response in operation["responses"].items():
            media = response.get("content", {}).get("application/json")
            if code.startswith("2") and media is not None and "example" in media:
                validator(document, media["schema"]).validate(media["example"])
                checked += 1
    assert checked >= 12


async def test_the_bodies_the_handlers_send_as_text_are_named(app_factory: AppFactory) -> None:
    document = await served_document(app_factory)
    paths = document["paths"]

    def body(path: str, method: str = "get", code: str = "200") -> dict[str, Any]:
        content: dict[str, Any] = paths[path][method]["responses"][code]["content"]
        return content

    generation = "/api/generations/{generation_id}"
    assert body(f"{generation}/events")["application/json"]["schema"] == {
        "$ref": "#/components/schemas/EventsPage"
    }
    assert body("/api/events")["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FeedPage"
    }
    assert set(body(f"{generation}/archive")) == {"application/zip"}
    assert set(body(f"{generation}/files/{{path}}")) == {"text/plain"}
    stream = paths[f"{generation}/stream"]["get"]["responses"]
    assert set(stream["200"]["content"]) == {"text/event-stream"}
    assert "retry:" in stream["200"]["description"]
    assert "204" in stream
    # A spec's fields are a dict of names to types, not an array (Litestar's reading).
    fields = document["components"]["schemas"]["Entity"]["properties"]["fields"]
    assert fields["type"] == "object"
    assert "pattern" in fields["propertyNames"]
    assert "patternProperties" not in fields
    # The providers this server runs, and no other.
    provider = document["components"]["schemas"]["CreateGeneration"]["properties"]["provider"]
    assert provider["anyOf"][0] == {"enum": ["offline"]}


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The published data schema with no room for keys it does not name (published, extra
    keys are allowed for newer servers; a real run of this one must not have any)."""
    return {**schema, "additionalProperties": False}


async def test_the_events_of_real_runs_fit_the_event_schema_type_by_type(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    key = await make_key("alice")
    # Cancelled where no worker runs (none could claim them first), then one retried.
    async with app_factory(worker_concurrency=0) as idle, idle.client(key) as other:
        cancelled = (await create_via_api(other, SMALL_SPEC))["id"]
        assert (await other.post(f"{API}/{cancelled}/cancel")).status_code == 202
        retried = (await create_via_api(other, SMALL_SPEC))["id"]
        assert (await other.post(f"{API}/{retried}/cancel")).status_code == 202
    async with app_factory(offline_delay_s=0.0) as running, running.client(key) as client:
        document = (await client.get("/schema/openapi.json")).json()
        succeeded = (await create_via_api(client, SMALL_SPEC, verify="tests"))["id"]
        await wait_for_status(client, succeeded)
        assert (await client.post(f"{API}/{retried}/retry")).status_code == 202
        await wait_for_status(client, retried)
        events = [
            *await events_via_api(client, retried),
            *await events_via_api(client, succeeded),
            *await events_via_api(client, cancelled),
        ]
    schemas = document["components"]["schemas"]
    any_event = validator(document, {"$ref": "#/components/schemas/Event"})
    mapping = schemas["Event"]["discriminator"]["mapping"]
    assert set(mapping) == {event_type.value for event_type in EventType}
    seen: set[str] = set()
    for event in events:
        any_event.validate(event)
        name = mapping[event["type"]].rsplit("/", 1)[-1]
        data_ref = schemas[name]["properties"]["data"]["$ref"]
        data_schema = schemas[data_ref.rsplit("/", 1)[-1]]
        validator(document, strict(data_schema)).validate(event["data"])
        seen.add(event["type"])
    # generation.failed and .resumed need a failing provider or a lost lease (the retried run
    # never started before it was cancelled), llm.retrying and llm.waiting a model that
    # fails or keeps silent, generation.stalled a worker that stops: their events are checked
    # against the same schema where those are made (test_runner, test_recovery,
    # test_gemini_runs).
    assert {event_type.value for event_type in EventType} - seen == {
        EventType.FAILED.value,
        EventType.RESUMED.value,
        EventType.LLM_RETRYING.value,
        EventType.LLM_WAITING.value,
        EventType.STALLED.value,
    }


# --- methods ---------------------------------------------------------------------------------


async def test_options_and_405_name_exactly_the_documented_methods(
    app_factory: AppFactory, make_key: KeyFactory
) -> None:
    key = await make_key("alice")
    async with app_factory(worker_concurrency=0) as running, running.client(key) as client:
        document = (await client.get("/schema/openapi.json")).json()
        for path, item in document["paths"].items():
            url = path.format(generation_id=uuid4(), path="app/main.py")
            documented = {method.upper() for method in item if method in METHODS}
            options = await client.options(url)
            assert options.status_code == 204, path
            allowed = {m.strip() for m in options.headers["allow"].split(",")}
            assert allowed == documented | {"OPTIONS"}, path
            refused = await client.request("TRACE", url)
            assert refused.status_code == 405, path
            assert refused.json()["status"] == 405
            assert {m.strip() for m in refused.headers["allow"].split(",")} == allowed, path
