"""Schemathesis over the service's own OpenAPI document: every operation, with data that fits
the schema and data that does not, against a real uvicorn and PostgreSQL, with a real key.
Whatever a client sends, the answer is never a 5xx.

Path parameters are generated, or the caller's own finished generation and its file (so that
what comes after the existence check is fuzzed too). The worker is off: generations the
fuzzer creates stay queued. The stream operation is fuzzed like the others: on a random id it
is a 404, on the finished generation it replays and ends (or answers 204/4xx); no generated
request can reach a generation that is still running, which it would follow for ever.

Litestar's OpenAPI document describes the spec's ``fields`` (a dict) as an array, so no body
generated from it is ever valid: ``POST /api/generations`` also gets bodies built here, valid
in shape, with generated text (NUL and all) in every text field.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from service.spec import SCALAR_TYPES
from service.store.db import Pool
from tests.conftest import AppFactory, KeyFactory
from tests.helpers import finished_generation

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 100  # per generation mode: positive, then negative
REQUEST_TIMEOUT_S = 15.0
CREATE = "POST /api/generations"

# Bodies for POST /api/generations: valid names and types (their rules have unit tests), and
# generated text where any text but NUL goes (descriptions, the model), or in the provider.
TEXT = st.text(max_size=40)
NAME = st.from_regex(r"[A-Z][a-z]{0,10}", fullmatch=True)


@st.composite
def create_bodies(draw: st.DrawFn) -> dict[str, Any]:
    def maybe(into: dict[str, Any], key: str, values: st.SearchStrategy[str]) -> None:
        if draw(st.booleans()):
            into[key] = draw(values)

    entities: list[dict[str, Any]] = []
    for name in draw(st.lists(NAME, min_size=1, max_size=3, unique_by=str.lower)):
        fields = draw(
            st.dictionaries(
                NAME.map(str.lower), st.sampled_from(sorted(SCALAR_TYPES)), min_size=1, max_size=3
            )
        )
        entities.append({"name": name, "fields": fields})
        maybe(entities[-1], "description", TEXT)
    spec = {
        "project": draw(st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,20}", fullmatch=True)),
        "entities": entities,
    }
    maybe(spec, "description", TEXT)
    body: dict[str, Any] = {"spec": spec}
    maybe(body, "model", TEXT)
    maybe(body, "provider", st.just("offline") | TEXT)
    return body


@dataclass
class FuzzReport:
    requests: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)


def fuzz(document: dict[str, Any], base_url: str, key: str, known: dict[str, str]) -> FuzzReport:
    """Runs in a thread: schemathesis calls are blocking, the server lives in the test's loop."""
    schema = schemathesis.openapi.from_dict(document)
    report = FuzzReport()
    headers = {"Authorization": f"Bearer {key}"}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err raises: the schema is ours
        name = f"{operation.method.upper()} {operation.path}"
        parameters = [parameter.name for parameter in operation.path_parameters]
        # Nothing fixed, then the known values of the first 1, 2, ... path parameters.
        fixings = [
            {name: known[name] for name in parameters[:count]}
            for count in range(len(parameters) + 1)
        ]
        for mode in schemathesis.GenerationMode:
            strategies = [
                operation.as_strategy(generation_mode=mode, path_parameters=fixed or None)
                for fixed in fixings
            ]
            if name == CREATE and mode is schemathesis.GenerationMode.POSITIVE:
                strategies.append(create_bodies().flatmap(with_body(operation)))
            try:
                fuzz_one(name, st.one_of(strategies), base_url, headers, report)
            except Unsatisfiable:
                # Negative data for an operation that takes nothing (GET /api/stats): there is
                # nothing to get wrong.
                assert mode is schemathesis.GenerationMode.NEGATIVE, name
    return report


def with_body(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
) -> Callable[[dict[str, Any]], st.SearchStrategy[schemathesis.Case[Any]]]:
    return lambda body: operation.as_strategy(body=body)


def fuzz_one(
    name: str,
    strategy: st.SearchStrategy[schemathesis.Case[Any]],
    base_url: str,
    headers: dict[str, str],
    report: FuzzReport,
) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def call(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT_S)
        report.requests[name] += 1
        report.statuses[response.status_code] += 1
        report.outcomes[f"{name} {response.status_code}"] += 1
        if response.status_code >= 500:
            report.server_errors.append(
                f"{response.status_code} {response.text[:300]}\n"
                f"    {case.as_curl_command(headers=headers)}"
            )

    call()


async def test_fuzzing_every_operation_finds_no_server_error(
    app_factory: AppFactory, make_key: KeyFactory, pool: Pool
) -> None:
    # An admin's key, so that the global feed's cursor is fuzzed too, not only refused (403).
    api_key = await make_key("alice", is_admin=True)
    generation_id = await finished_generation(pool, "alice")
    known = {"generation_id": str(generation_id), "path": "app/main.py"}
    async with app_factory(worker_concurrency=0) as running, running.client(api_key) as client:
        document = (await client.get("/schema/openapi.json")).json()
        report = await asyncio.to_thread(fuzz, document, running.base_url, api_key, known)
    print(
        f"fuzzed {len(report.requests)} operations with {sum(report.requests.values())} "
        f"requests: {dict(sorted(report.statuses.items()))}"
    )
    operations = {f"{method.upper()} {path}" for path, item in document["paths"].items()
                  for method in item}  # fmt: skip
    assert set(report.requests) == operations
    assert report.outcomes[f"{CREATE} 201"] > 0, "no generated create was valid"
    assert report.server_errors == [], "\n".join(report.server_errors)
