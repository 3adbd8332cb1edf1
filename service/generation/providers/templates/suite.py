"""The generated tests themselves: ``tests/test_app.py`` and one ``tests/test_<entity>.py`` each.

The app's tests check what every project has (health, OpenAPI, settings, the page cap); an
entity's tests check its CRUD, unknown ids and invalid bodies, and for each reference that a
missing row is refused (422) and an existing one accepted, and for each referrer that a
referred-to row cannot be deleted (409). A test's name embeds the user's field and module
names, so two may collide (a field ``a_b`` of ``x`` and a field ``b`` of ``x_a``); ``_unique``
numbers the later one rather than let it silently replace the first.
"""

from __future__ import annotations

from service.generation.providers.templates.layout import source, wrap_def
from service.generation.providers.templates.plan import EntityPlan, Plan
from service.generation.providers.templates.quoting import docstring, py_str


def app_tests(plan: Plan) -> str:
    first = plan.entities[0]
    lines = [
        '"""Tests of the app as a whole: health, OpenAPI, settings."""',
        "",
        "from __future__ import annotations",
        "",
        "from typing import Any",
        "",
        "from litestar.testing import TestClient",
        "",
        "from app.main import create_app",
        "from app.settings import Settings",
        "from tests import factories",
        "",
        "",
        "def test_health_answers_ok(client: TestClient[Any]) -> None:",
        '    response = client.get("/health")',
        "    assert response.status_code == 200",
        '    assert response.json() == {"status": "ok"}',
        "",
        "",
        "def test_openapi_lists_every_entity_path(client: TestClient[Any]) -> None:",
        '    response = client.get("/schema/openapi.json")',
        "    assert response.status_code == 200, response.text",
        '    paths = response.json()["paths"]',
        "    for path in (",
        *(f"        {py_str(entity.path)}," for entity in plan.entities),
        "    ):",
        "        assert path in paths",
        '        assert path + "/{row_id}" in paths',
        "",
        "",
        "def test_settings_are_read_from_the_environment() -> None:",
        "    settings = Settings.from_env(",
        '        {"APP_TITLE": "Renamed", "APP_DEBUG": "yes", "APP_MAX_PAGE_SIZE": "3"}',
        "    )",
        '    assert settings == Settings(title="Renamed", debug=True, max_page_size=3)',
        "    assert Settings.from_env({}) == Settings()",
        "",
        "",
        "def test_list_pages_are_capped_at_the_max_page_size() -> None:",
        "    with TestClient(app=create_app(Settings(max_page_size=1))) as client:",
        f"        first = factories.create_{first.module}(client)",
        f"        factories.create_{first.module}(client, variant=1)",
        f'        response = client.get({py_str(first.path)}, params={{"limit": 50}})',
        "        assert response.status_code == 200, response.text",
        "        assert response.json() == [first]",
    ]
    return source(lines)


def entity_tests(plan: Plan, entity: EntityPlan) -> str:
    module = entity.module
    taken: set[str] = set()

    def test_def(name: str) -> list[str]:
        """The def line of a test of this module, its name made unique."""
        return wrap_def(_unique(name, taken), "client: TestClient[Any]", "None")

    wire = {field.name for field in entity.fields}
    unknown = "unexpected"
    while unknown in wire:
        unknown += "_"
    required = [field for field in entity.fields if not field.nullable]
    first = entity.fields[0]
    lines = [
        docstring(
            f"Tests of {entity.path} ({entity.name}): CRUD, unknown ids, invalid bodies, "
            "references."
        ),
        "",
        "from __future__ import annotations",
        "",
        "import uuid",
        "from typing import Any",
        "",
        "from litestar.testing import TestClient",
        "",
        "from tests import factories",
        "",
        f"PATH = {py_str(entity.path)}",
        f"KEY = {py_str(entity.key)}",
        "",
        "",
        *test_def("test_create_answers_201_with_the_stored_row"),
        f"    payload = factories.payload_{module}(client)",
        "    response = client.post(PATH, json=payload)",
        "    assert response.status_code == 201, response.text",
        "    row = response.json()",
        "    factories.assert_matches(row, payload)",
        "    assert uuid.UUID(row[KEY])",
        "",
        "",
        *test_def("test_get_returns_the_stored_row"),
        f"    row = factories.create_{module}(client)",
        '    response = client.get(f"{PATH}/{row[KEY]}")',
        "    assert response.status_code == 200, response.text",
        "    assert response.json() == row",
        "",
        "",
        *test_def("test_list_returns_the_rows_in_creation_order"),
        f"    first = factories.create_{module}(client)",
        f"    second = factories.create_{module}(client, variant=1)",
        "    response = client.get(PATH)",
        "    assert response.status_code == 200, response.text",
        "    assert response.json() == [first, second]",
        '    assert client.get(PATH, params={"offset": 1, "limit": 1}).json() == [second]',
        "",
        "",
        *test_def("test_replace_changes_every_field"),
        f"    row = factories.create_{module}(client)",
        f"    payload = factories.payload_{module}(client, variant=1)",
        '    response = client.put(f"{PATH}/{row[KEY]}", json=payload)',
        "    assert response.status_code == 200, response.text",
        "    replaced = response.json()",
        "    factories.assert_matches(replaced, payload)",
        "    assert replaced[KEY] == row[KEY]",
        '    assert client.get(f"{PATH}/{row[KEY]}").json() == replaced',
        "",
        "",
        *test_def("test_delete_removes_the_row"),
        f"    row = factories.create_{module}(client)",
        '    response = client.delete(f"{PATH}/{row[KEY]}")',
        "    assert response.status_code == 204, response.text",
        '    assert client.get(f"{PATH}/{row[KEY]}").status_code == 404',
        "    assert client.get(PATH).json() == []",
        "",
        "",
        *test_def("test_unknown_ids_answer_404"),
        '    missing = f"{PATH}/{uuid.uuid4()}"',
        "    assert client.get(missing).status_code == 404",
        (
            f"    assert client.put(missing, json=factories.payload_{module}(client))"
            ".status_code == 404"
        ),
        "    assert client.delete(missing).status_code == 404",
        "",
        "",
        *test_def("test_invalid_bodies_are_refused"),
        f"    payload = factories.payload_{module}(client)",
        f"    bodies: list[Any] = [[], {{**payload, {py_str(unknown)}: 1}}]",
        f"    bodies.append({{**payload, {py_str(first.name)}: {first.wrong_value}}})",
    ]
    if required:
        lines.append(
            "    bodies.append({k: v for k, v in payload.items() if k != "
            f"{py_str(required[0].name)}}})"
        )
    lines += [
        "    for body in bodies:",
        "        response = client.post(PATH, json=body)",
        "        assert response.status_code == 400, (body, response.text)",
        "    assert client.get(PATH).json() == []",
    ]
    for field in entity.references:
        target = plan.entity(field.target or "")
        lines += [
            "",
            "",
            *test_def(f"test_a_missing_{field.name}_is_refused"),
            (
                f"    payload = {{**factories.payload_{module}(client), "
                f"{py_str(field.name)}: str(uuid.uuid4())}}"
            ),
            "    response = client.post(PATH, json=payload)",
            "    assert response.status_code == 422, response.text",
            '    missing = response.json()["extra"]["missing"]',
            f'    assert [item["field"] for item in missing] == [{py_str(field.name)}]',
            "    assert client.get(PATH).json() == []",
            f"    row = factories.create_{module}(client)",
            '    response = client.put(f"{PATH}/{row[KEY]}", json=payload)',
            "    assert response.status_code == 422, response.text",
            '    assert client.get(f"{PATH}/{row[KEY]}").json() == row',
            "",
            "",
            *test_def(f"test_an_existing_{field.name}_is_accepted"),
            f"    target = factories.create_{target.module}(client)",
            (
                f"    payload = {{**factories.payload_{module}(client), "
                f"{py_str(field.name)}: target[{py_str(target.key)}]}}"
            ),
            "    response = client.post(PATH, json=payload)",
            "    assert response.status_code == 201, response.text",
            f"    assert response.json()[{py_str(field.name)}] == target[{py_str(target.key)}]",
        ]
    for referrer_name, field in entity.referrers:
        referrer = plan.entity(referrer_name)
        lines += [
            "",
            "",
            *test_def(f"test_delete_is_refused_while_{referrer.module}_{field.name}_refers_to_it"),
            f"    row = factories.create_{module}(client)",
            f"    referrer = factories.create_{referrer.module}(",
            f"        client, overrides={{{py_str(field.name)}: row[KEY]}}",
            "    )",
            '    response = client.delete(f"{PATH}/{row[KEY]}")',
            "    assert response.status_code == 409, response.text",
            '    assert client.get(f"{PATH}/{row[KEY]}").status_code == 200',
            f'    referrer_path = {py_str(referrer.path)} + "/" + referrer[{py_str(referrer.key)}]',
            "    assert client.delete(referrer_path).status_code == 204",
            '    assert client.delete(f"{PATH}/{row[KEY]}").status_code == 204',
        ]
    return source(lines)


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name_2``, ``name_3``... when taken; the result is taken from then on."""
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    taken.add(candidate)
    return candidate
