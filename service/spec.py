"""What a user asks genstream to generate: a project and its entities, validated strictly.

Field types are ``str``, ``int``, ``float``, ``bool``, ``datetime``, ``uuid``, or the name of
another entity in the spec (a reference), optionally written ``ref:Name``.
"""

from __future__ import annotations

import keyword
import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SCALAR_TYPES = frozenset({"str", "int", "float", "bool", "datetime", "uuid"})
MAX_ENTITIES = 30
MAX_FIELDS = 40
RESERVED_FIELDS = frozenset({"id"})

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

ProjectName = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=1, max_length=64, pattern=r"^[A-Za-z][A-Za-z0-9_-]*$"
    ),
]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64)]
TypeName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=68)]


def _check_identifier(name: str, what: str) -> None:
    if not _IDENTIFIER.match(name) or keyword.iskeyword(name):
        raise ValueError(f"{what} {name!r} is not a valid Python identifier")


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
