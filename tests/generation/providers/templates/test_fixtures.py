"""The generated factories: a payload is valid, and creates first every row it refers to.

The generated ``tests/factories.py`` is executed here against a small fake of Litestar's test
client, so these tests see what a payload holds without serving the generated app (test_offline
does that for whole projects).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from service.generation.providers.templates.fixtures import factories
from service.generation.providers.templates.plan import plan_project
from service.spec import Spec

TARGET = "TargetEntityWithAQuiteLongNameIndeedForTheWrapTestXY"
LONG_FIELD = "reference_to_the_target_entity_with_a_long_field_name_too_abcdef"


@dataclass
class FakeResponse:
    body: dict[str, Any]
    status_code: int = 201

    @property
    def text(self) -> str:
        return repr(self.body)

    def json(self) -> dict[str, Any]:
        return self.body


@dataclass
class FakeClient:
    """Answers every POST as a created row with a fresh id, and remembers it."""

    created: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def post(self, path: str, json: dict[str, Any]) -> FakeResponse:
        row = {"id": str(uuid.uuid4()), **json}
        self.created.append((path, row))
        return FakeResponse(row)


def load_factories(spec: Spec) -> dict[str, Callable[..., dict[str, Any]]]:
    text = factories(plan_project(spec))
    namespace: dict[str, Any] = {}
    exec(compile(text, "factories.py", "exec", dont_inherit=True), namespace)  # noqa: S102
    return namespace


def test_a_reference_too_long_for_one_line_still_creates_its_row() -> None:
    # A long reference line once fell back to two fixed UUID samples, which refer to no row.
    spec = Spec.model_validate(
        {
            "project": "p",
            "entities": [
                {"name": TARGET, "fields": {"title": "str"}},
                {"name": "Holder", "fields": {LONG_FIELD: TARGET, "n": "int"}},
            ],
        }
    )
    client = FakeClient()
    payload = load_factories(spec)["payload_holder"](client)
    ((path, target_row),) = client.created
    assert path.endswith("_xys")
    assert payload == {LONG_FIELD: target_row["id"], "n": 41}


def test_variants_differ_and_cycle_references_stay_null() -> None:
    spec = Spec.model_validate(
        {
            "project": "p",
            "entities": [
                {"name": "Employee", "fields": {"manager": "Employee", "name": "str"}},
                {"name": "Desk", "fields": {"user": "Employee", "floor": "int"}},
            ],
        }
    )
    client = FakeClient()
    namespace = load_factories(spec)
    first, second = (namespace["payload_desk"](client, variant) for variant in (0, 1))
    assert first["floor"] != second["floor"]
    employees = [row for path, row in client.created if path == "/employees"]
    assert [first["user"], second["user"]] == [row["id"] for row in employees]
    assert all(row["manager"] is None for row in employees)
    row = namespace["create_desk"](client, 1, {"floor": 99})
    assert row["floor"] == 99
    assert row["user"] == client.created[-2][1]["id"]
