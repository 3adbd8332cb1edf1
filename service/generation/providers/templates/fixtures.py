"""What the generated test suite stands on: ``tests/__init__.py``, ``conftest.py``, factories.

Every test gets a client over an empty database, and no test depends on another's rows: one
app serves the whole session (building a Litestar app and starting its client cost about 0.2 s,
which made a ten-entity suite take 31 s instead of 11), and its database is emptied before each
test. The factories build valid bodies and rows through the API itself, creating
first whatever rows a reference needs, so a test of one entity needs to know nothing of the
entities it refers to. A nullable reference (one in a reference cycle) stays null, which is
what makes a cycle's first row creatable.
"""

from __future__ import annotations

from service.generation.providers.templates.layout import LINE, source, wrap_def
from service.generation.providers.templates.plan import EntityPlan, FieldPlan, Plan
from service.generation.providers.templates.quoting import py_str


def tests_init(plan: Plan) -> str:
    return source(['"""The tests of the generated API."""'])


def conftest(plan: Plan) -> str:
    lines = [
        '"""Fixtures: a test client over an empty database for every test (one app for the',
        'session, emptied before each test: building an app per test is slow)."""',
        "",
        "from __future__ import annotations",
        "",
        "from collections.abc import Iterator",
        "from typing import Any",
        "",
        "import pytest",
        "from litestar.testing import TestClient",
        "",
        "from app.main import create_app",
        "from app.settings import Settings",
        "",
        "",
        '@pytest.fixture(scope="session")',
        "def session_client() -> Iterator[TestClient[Any]]:",
        "    with TestClient(app=create_app(Settings())) as test_client:",
        "        yield test_client",
        "",
        "",
        "@pytest.fixture",
        "def client(session_client: TestClient[Any]) -> TestClient[Any]:",
        "    session_client.app.state.database.clear()",
        "    return session_client",
    ]
    return source(lines)


def factories(plan: Plan) -> str:
    lines = [
        '"""Valid bodies and stored rows of every entity, built through the API.',
        "",
        "``payload_<entity>(client, variant)`` is a valid create/replace body (variants 0 and 1",
        "differ in every field but nullable references, which stay null); rows it refers to are",
        "created first. ``create_<entity>(client, variant, overrides)`` stores one row and",
        "returns it as the API answered.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any",
        "",
        "from litestar.testing import TestClient",
        "",
        "",
        "def assert_matches(row: dict[str, Any], payload: dict[str, Any]) -> None:",
        '    """Every field of the payload came back with the same value."""',
        "    assert {name: row.get(name) for name in payload} == payload",
    ]
    for entity in plan.entities:
        lines += [
            "",
            "",
            *wrap_def(
                f"payload_{entity.module}",
                "client: TestClient[Any], variant: int = 0",
                "dict[str, Any]",
            ),
            "    return {",
        ]
        for field in entity.fields:
            lines += _payload_item(plan, field)
        lines += ["    }", "", "", *_create_factory(entity)]
    return source(lines)


def _payload_item(plan: Plan, field: FieldPlan) -> list[str]:
    """The ``name: value`` item of a payload, wrapped when one line would be too long: a value
    made of two samples puts each on its own line; a reference keeps creating its row."""
    if field.nullable:
        value = "None"
    elif field.target:
        target = plan.entity(field.target)
        value = f"create_{target.module}(client)[{py_str(target.key)}]"
    else:
        value = f"({field.sample(0)}, {field.sample(1)})[variant]"
    key = py_str(field.name)
    line = f"        {key}: {value},"
    if len(line) <= LINE:
        return [line]
    if field.target:
        return [f"        {key}: (", f"            {value}", "        ),"]
    return [
        f"        {key}: (",
        f"            {field.sample(0)},",
        f"            {field.sample(1)},",
        "        )[variant],",
    ]


def _create_factory(entity: EntityPlan) -> list[str]:
    """``create_<entity>``: post a payload (with any overrides), return the stored row."""
    return [
        f"def create_{entity.module}(",
        "    client: TestClient[Any],",
        "    variant: int = 0,",
        "    overrides: dict[str, Any] | None = None,",
        ") -> dict[str, Any]:",
        f"    payload = {{**payload_{entity.module}(client, variant), **(overrides or {{}})}}",
        f"    response = client.post({py_str(entity.path)}, json=payload)",
        "    assert response.status_code == 201, response.text",
        "    row: dict[str, Any] = response.json()",
        "    return row",
    ]
