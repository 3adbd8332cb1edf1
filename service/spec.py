"""What a user asks genstream to generate: a project and its entities, validated strictly.

Field types are ``str``, ``int``, ``float``, ``bool``, ``datetime``, ``uuid``, or the name of
another entity in the spec (a reference), optionally written ``ref:Name``.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

SCALAR_TYPES = frozenset({"str", "int", "float", "bool", "datetime", "uuid"})
MAX_ENTITIES = 30
MAX_FIELDS = 40
RESERVED_FIELDS = frozenset({"id"})

# Every regex that validates input matches the WHOLE text (fullmatch): with match() and `$`,
# "email\n" passed, since `$` also matches before a final newline.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PROJECT = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


def _check_project(name: str) -> str:
    if not _PROJECT.fullmatch(name):
        raise ValueError(
            f"project {name!r} must start with a letter and use only letters, digits, '_', '-'"
        )
    return name


ProjectName = Annotated[
    str,
    # The pattern is for the OpenAPI document (Litestar copies it there); _check_project is
    # what refuses, whichever regex engine pydantic is configured with.
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$"
    ),
    AfterValidator(_check_project),
]
# As with ProjectName, the OpenAPI document gets the patterns (WithJsonSchema) and the model
# validators refuse, with messages that say which rule. What no schema can say is described:
# a keyword is not a name, and a type may name only an entity of the same spec.
_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "pattern": _NAME_PATTERN,
            "description": "A Python identifier, not a keyword.",
        }
    ),
]
TypeName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=68),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": sorted(SCALAR_TYPES)},
                {"type": "string", "maxLength": 68, "pattern": "^(ref:)?[A-Za-z_][A-Za-z0-9_]*$"},
            ],
            "description": "A scalar type, or the name of another entity of this spec (a "
            "reference), optionally written `ref:Name`.",
        }
    ),
]


def _check_identifier(name: str, what: str) -> None:
    if not _IDENTIFIER.fullmatch(name) or keyword.iskeyword(name):
        raise ValueError(f"{what} {name!r} is not a valid Python identifier")


def nul_at(value: object) -> str | None:
    """Where the first NUL is in a JSON value's strings, keys included (``description``,
    ``entities[0].fields.a\\u0000``), or None. PostgreSQL stores no NUL in text, nor
    ``\\u0000`` in jsonb: a request carrying one must be refused whole, naming the field,
    before any of it is stored. Iterative, so no nesting depth is too deep for it."""
    stack: list[tuple[str, object]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where or "the value"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                name = str(key)
                place = f"{where}.{name}" if where else name
                if "\x00" in name:
                    return place.replace("\x00", "\\u0000")
                stack.append((place, child))
        elif isinstance(item, list | tuple):
            indexed = [(f"{where}[{index}]", child) for index, child in enumerate(item)]
            stack.extend(reversed(indexed))
    return None


def refuse_nul(value: object) -> object:
    """``value`` unchanged, or ValueError naming the field whose text holds a NUL."""
    if (where := nul_at(value)) is not None:
        raise ValueError(f"{where} must not contain NUL (\\u0000): it cannot be stored")
    return value


def module_name(entity_name: str) -> str:
    """The snake_case module an entity's code lives in (``OrderItem`` -> ``order_item``);
    a trailing underscore keeps it off Python's keywords (``Class`` -> ``class_``)."""
    snake = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", entity_name).lower()
    return snake + "_" if keyword.iskeyword(snake) else snake


def referenced_entity(type_name: str) -> str | None:
    """The entity a field type refers to, or None for a scalar type."""
    if type_name in SCALAR_TYPES:
        return None
    return type_name.removeprefix("ref:")


class Entity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Identifier
    fields: dict[Identifier, TypeName] = Field(min_length=1, max_length=MAX_FIELDS)
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None

    @model_validator(mode="after")
    def _names_are_identifiers(self) -> Entity:
        _check_identifier(self.name, "entity name")
        for field_name in self.fields:
            _check_identifier(field_name, f"field name of {self.name}")
            if field_name in RESERVED_FIELDS:
                raise ValueError(
                    f"{self.name}.{field_name}: '{field_name}' is reserved (every entity gets "
                    "its own id)"
                )
        return self


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    project: ProjectName
    description: Annotated[str, StringConstraints(max_length=4000)] | None = None
    entities: list[Entity] = Field(min_length=1, max_length=MAX_ENTITIES)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: object) -> object:
        return refuse_nul(data)

    @model_validator(mode="after")
    def _entities_are_consistent(self) -> Spec:
        names = [entity.name for entity in self.entities]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate entity names: {', '.join(duplicates)}")
        modules: dict[str, str] = {}
        for name in names:
            other = modules.setdefault(module_name(name), name)
            if other != name:
                raise ValueError(
                    f"entities {other} and {name} would share the module name "
                    f"{module_name(name)!r}: rename one"
                )
        known = set(names)
        for entity in self.entities:
            for field_name, type_name in entity.fields.items():
                target = referenced_entity(type_name)
                if target is not None and target not in known:
                    raise ValueError(
                        f"{entity.name}.{field_name} has type {type_name!r}: not one of "
                        f"{', '.join(sorted(SCALAR_TYPES))} nor an entity of this spec"
                    )
        return self
