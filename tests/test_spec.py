from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from service.spec import MAX_ENTITIES, Spec, nul_at


def spec(*entities: dict[str, Any], project: str = "shop", **extra: Any) -> dict[str, Any]:
    return {"project": project, "entities": list(entities), **extra}


USER: dict[str, Any] = {"name": "User", "fields": {"email": "str", "age": "int"}}


def invalid(data: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        Spec.model_validate(data)
    return str(info.value)


def test_a_valid_spec_passes_with_every_scalar_type_and_both_reference_forms() -> None:
    parsed = Spec.model_validate(
        spec(
            {
                "name": "User",
                "fields": {
                    "email": "str",
                    "age": "int",
                    "score": "float",
                    "active": "bool",
                    "joined": "datetime",
                    "token": "uuid",
                },
                "description": "Someone who buys",
            },
            {"name": "Order", "fields": {"user": "User", "buyer": "ref:User", "total": "float"}},
            description="A small shop",
        )
    )
    assert parsed.project == "shop"
    assert [entity.name for entity in parsed.entities] == ["User", "Order"]
    assert parsed.entities[1].fields == {"user": "User", "buyer": "ref:User", "total": "float"}


def test_duplicate_entity_names_are_refused_by_name() -> None:
    message = invalid(spec(USER, {"name": "User", "fields": {"x": "int"}}))
    assert "duplicate entity names: User" in message


def test_an_unknown_field_type_is_refused_naming_the_field_and_type() -> None:
    message = invalid(spec({"name": "User", "fields": {"email": "string"}}))
    assert "User.email" in message
    assert "'string'" in message


@pytest.mark.parametrize("type_name", ["Customer", "ref:Customer"])
def test_a_reference_to_a_missing_entity_is_refused(type_name: str) -> None:
    message = invalid(spec(USER, {"name": "Order", "fields": {"buyer": type_name}}))
    assert "Order.buyer" in message
    assert repr(type_name) in message


@pytest.mark.parametrize(
    "name", ["2fast", "my-entity", "has space", "Ünïcode", "", "User\n", "User\r", "Us\ner"]
)
def test_entity_names_that_are_not_identifiers_are_refused(name: str) -> None:
    message = invalid(spec({"name": name, "fields": {"x": "int"}}))
    assert "name" in message
    if name:
        assert f"entity name {name!r} is not a valid Python identifier" in message


# "email\n" passed a `$`-anchored match(), and the generated model was a SyntaxError.
@pytest.mark.parametrize("name", ["2fast", "my-field", "has space", "email\n", "email\r\n"])
def test_field_names_that_are_not_identifiers_are_refused(name: str) -> None:
    message = invalid(spec({"name": "User", "fields": {name: "int"}}))
    assert f"field name of User {name!r} is not a valid Python identifier" in message


def test_python_keywords_are_refused_as_entity_names() -> None:
    message = invalid(spec({"name": "class", "fields": {"x": "int"}}))
    assert "entity name 'class' is not a valid Python identifier" in message


@pytest.mark.parametrize("name", ["class", "def", "None", "import"])
def test_python_keywords_are_refused_as_field_names(name: str) -> None:
    message = invalid(spec({"name": "User", "fields": {name: "int"}}))
    assert f"field name of User {name!r} is not a valid Python identifier" in message


def test_thirty_entities_pass_and_thirty_one_are_refused() -> None:
    entities = [{"name": f"E{i}", "fields": {"x": "int"}} for i in range(MAX_ENTITIES + 1)]
    assert MAX_ENTITIES == 30
    assert len(Spec.model_validate(spec(*entities[:30])).entities) == 30
    message = invalid(spec(*entities))
    assert "entities" in message
    assert "at most 30" in message


def test_an_empty_entities_list_is_refused() -> None:
    message = invalid(spec())
    assert "entities" in message
    assert "at least 1" in message


def test_an_entity_without_fields_is_refused() -> None:
    message = invalid(spec({"name": "User", "fields": {}}))
    assert "fields" in message
    assert "at least 1" in message


def test_unknown_fields_in_the_spec_are_refused_by_name() -> None:
    message = invalid(spec(USER, colour="blue"))
    assert "colour" in message
    assert "Extra inputs are not permitted" in message


def test_unknown_fields_in_an_entity_are_refused_by_name() -> None:
    message = invalid(spec({**USER, "table": "users"}))
    assert "table" in message
    assert "Extra inputs are not permitted" in message


@pytest.mark.parametrize("project", ["", "   ", "my shop", " my shop", "a\tb", "sh\nop", "1shop"])
def test_project_names_that_are_empty_or_have_spaces_are_refused(project: str) -> None:
    message = invalid(spec(USER, project=project))
    assert "project" in message


def test_whitespace_around_a_project_name_is_stripped() -> None:
    assert Spec.model_validate(spec(USER, project="  shop ")).project == "shop"


def test_a_missing_project_is_refused() -> None:
    message = invalid({"entities": [USER]})
    assert "project" in message
    assert "Field required" in message


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"description": "a\x00b"}, "description"),
        ({"entities": [{**USER, "description": "\x00"}]}, "entities[0].description"),
        ({"entities": [{"name": "User", "fields": {"e\x00": "str"}}]}, "entities[0].fields.e"),
        ({"entities": [{"name": "User", "fields": {"email": "str\x00"}}]}, "fields.email"),
        ({"project": "shop\x00"}, "project"),
    ],
)
def test_a_nul_anywhere_in_the_spec_is_refused_naming_the_field(
    overrides: dict[str, Any], field: str
) -> None:
    message = invalid(spec(USER, **overrides))
    assert f"{field}" in message
    assert "must not contain NUL" in message


def test_the_nul_check_walks_any_depth_without_recursion() -> None:
    deep: Any = "\x00"
    for _ in range(5000):
        deep = [deep]
    assert nul_at({"a": deep}) == "a" + "[0]" * 5000
    assert nul_at({"a": [1, 2.5, None, True, {"b": "ok"}]}) is None
