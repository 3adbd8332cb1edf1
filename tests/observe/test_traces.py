"""``observe/traces.py``: the span tree of one generation, from the request that created it
to each append, and a run that continues its creator's trace though another runtime ran it
(the context travels with the run in the database)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from service.generation.phases import PHASES
from service.observe import traces
from tests.conftest import AppFactory, KeyFactory
from tests.helpers import SMALL_SPEC, create_via_api, wait_for_status


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traces.use(provider)
    yield exporter
    traces.use(None)
    provider.shutdown()


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    assert parent.context is not None
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


async def test_one_generation_is_one_trace_from_its_request_to_each_append(
    app_factory: AppFactory, make_key: KeyFactory, exported: InMemorySpanExporter
) -> None:
    key = await make_key("alice")
    caller_trace = "0af7651916cd43dd8448eb211c80319c"
    async with app_factory(worker_concurrency=0) as creating, creating.client(key) as client:
        response = await client.post(
            "/api/generations",
            json={"spec": SMALL_SPEC},
            headers={"traceparent": f"00-{caller_trace}-b7ad6b7169203331-01"},
        )
        assert response.status_code == 201, response.text
        generation_id = response.json()["id"]
    # Another runtime (as another process would) claims and runs it.
    async with app_factory(worker_concurrency=1) as running, running.client(key) as client:
        await wait_for_status(client, generation_id, "succeeded")
        await create_via_api(client, SMALL_SPEC)  # untraced by the caller: a trace of its own

    spans = list(exported.get_finished_spans())
    (request,) = [
        s
        for s in spans
        if s.name == "POST /api/generations" and s.context.trace_id == int(caller_trace, 16)
    ]
    assert request.parent is not None  # the caller's span
    (run,) = [
        s
        for s in spans
        if s.name == "run" and s.attributes and s.attributes["generation_id"] == generation_id
    ]
    assert run.context.trace_id == request.context.trace_id
    assert run.parent is not None
    assert run.parent.span_id == request.context.span_id
    phases = [s for s in children(spans, run) if s.name == "phase"]
    assert [s.attributes["phase"] for s in phases if s.attributes] == [p.stage for p in PHASES]
    for phase in phases:
        calls = [s for s in children(spans, phase) if s.name == "model.call"]
        assert len(calls) == 1
        assert any(s.name == "append" for s in children(spans, phase))
    # The run's own appends (started, succeeded) hang from the run itself.
    assert sum(s.name == "append" for s in children(spans, run)) == 2
    others = [s for s in spans if s.name == "POST /api/generations" and s is not request]
    assert others
    assert all(s.context.trace_id != request.context.trace_id for s in others)


def test_tracing_is_off_unless_the_standard_variables_ask() -> None:
    assert traces.configure(None, None, "genstream") is False
    assert traces.configure("none", "http://collector:4318", "genstream") is False
    assert traces.enabled() is False
    assert traces.current_carrier() is None
    with traces.span("append") as nothing:
        assert nothing is None


async def test_a_malformed_traceparent_starts_a_trace_of_its_own_and_the_request_succeeds(
    app_factory: AppFactory, make_key: KeyFactory, exported: InMemorySpanExporter
) -> None:
    key = await make_key("alice")
    async with app_factory(worker_concurrency=0) as running, running.client(key) as client:
        responses = [
            await client.get("/api/generations", headers={b"traceparent": parent})
            for parent in (b"garbage", b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01", b"\xe9" * 60)
        ]
    assert [response.status_code for response in responses] == [200, 200, 200]
    spans = [s for s in exported.get_finished_spans() if s.name == "GET /api/generations"]
    assert len(spans) == 3
    assert all(s.parent is None for s in spans)  # none continued an invalid context
