"""The plan: every name the templates agree on, decided once from the spec.

The model, the routes, the factories and the tests of one entity must use the same attribute
for a field, the same row id and the same URL path, and a reference field must know whether it
may be null. Deciding those here, once, keeps the templates free of naming rules: they only
read the plan. The rules:

- A field keeps the spec's name on the wire. A name pydantic cannot hold as an attribute (a
  leading ``_``, the ``model_`` prefix, a ``BaseModel`` method such as ``json``) gets the
  attribute ``f_<name>``, with ``_`` appended while that is taken, aliased to the spec's name.
- The row id is ``id``, with ``_`` appended for as long as the entity has a field of that
  name, so the spec's field keeps its name.
- A reference is nullable exactly when it is part of a reference cycle (its target can reach
  back to its entity); otherwise no first row of the cycle could be created.
- An entity whose module would be a dunder (``__init__``) is refused with a ValueError, since
  it would replace a package's ``__init__.py``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.generation.providers.templates.quoting import py_str
from service.spec import Spec, module_name, referenced_entity

PY_TYPES = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "datetime": "datetime.datetime",
    "uuid": "uuid.UUID",
}

# Public attributes of pydantic's BaseModel (besides the ``model_`` prefix) a field may not shadow.
BASEMODEL_NAMES = frozenset(
    {
        "construct",
        "copy",
        "dict",
        "from_orm",
        "json",
        "parse_file",
        "parse_obj",
        "parse_raw",
        "schema",
        "schema_json",
        "update_forward_refs",
        "validate",
    }
)

# A Python literal of the wrong type for each field type, for the "invalid body" tests.
_WRONG_VALUES = {
    "str": "12345",
    "int": "'not a number'",
    "float": "'not a number'",
    "bool": "'not a boolean'",
    "datetime": "'not a date'",
    "uuid": "'not-a-uuid'",
}


@dataclass(frozen=True, slots=True)
class FieldPlan:
    name: str  # the spec's name, used in JSON
    attr: str  # the pydantic attribute
    type_name: str  # the spec's type
    target: str | None  # the referenced entity
    nullable: bool  # a reference in a reference cycle
    index: int  # the field's position in its entity, which keeps sample values distinct

    @property
    def aliased(self) -> bool:
        return self.attr != self.name

    @property
    def annotation(self) -> str:
        """The field's annotation; qualified names only (``uuid.UUID``, ``typing.Annotated``),
        so a field named like a builtin or a module cannot shadow what the annotation means."""
        base = "uuid.UUID" if self.target else PY_TYPES[self.type_name]
        extras = []
        if self.nullable:
            base += " | None"
            extras.append("default=None")
        if self.aliased:
            extras.append(f"alias={py_str(self.name)}")
        if not extras:
            return base
        return f"typing.Annotated[{base}, pydantic.Field({', '.join(extras)})]"

    def sample(self, variant: int) -> str:
        """A Python literal for a valid value (references are handled by the caller); the two
        variants differ, so a test can tell a replaced row from the original."""
        index = self.index
        if self.type_name == "str":
            return py_str(f"{('sample', 'changed')[variant]} {self.name}")
        if self.type_name == "int":
            return str((40 + index, 7 + index)[variant])
        if self.type_name == "float":
            return repr((1.5 + index, 2.25 + index)[variant])
        if self.type_name == "bool":
            return ("True", "False")[variant]
        if self.type_name == "datetime":
            return py_str(("2024-01-02T03:04:05Z", "2025-06-07T08:09:10Z")[variant])
        return py_str(f"{('00000000', 'ffffffff')[variant]}-0000-4000-8000-{index:012x}")

    @property
    def wrong_value(self) -> str:
        return _WRONG_VALUES["uuid" if self.target else self.type_name]


@dataclass(frozen=True, slots=True)
class EntityPlan:
    name: str
    module: str
    key: str  # the row id's name
    description: str | None
    fields: tuple[FieldPlan, ...]
    referrers: tuple[tuple[str, FieldPlan], ...]  # (referring entity, its field) for each

    @property
    def path(self) -> str:
        return f"/{self.module}s"

    @property
    def references(self) -> tuple[FieldPlan, ...]:
        return tuple(field for field in self.fields if field.target)


@dataclass(frozen=True, slots=True)
class Plan:
    spec: Spec
    entities: tuple[EntityPlan, ...]

    def entity(self, name: str) -> EntityPlan:
        return next(entity for entity in self.entities if entity.name == name)


def plan_project(spec: Spec) -> Plan:
    """The plan of the project for this spec; ValueError for an entity whose module would be
    a dunder."""
    edges = {
        entity.name: {target for target in map(referenced_entity, entity.fields.values()) if target}
        for entity in spec.entities
    }

    def reaches(start: str, goal: str) -> bool:
        seen: set[str] = set()
        todo = [start]
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(sorted(edges[node]))
        return False

    # Referrers need every entity's fields, so a first pass plans the fields, a second adds them.
    partial: list[EntityPlan] = []
    for entity in spec.entities:
        module = module_name(entity.name)
        if re.fullmatch(r"__\w*__", module):
            raise ValueError(
                f"entity {entity.name!r} would live in the module {module!r}: rename it"
            )
        key = "id"
        while key in entity.fields:
            key += "_"
        taken = set(entity.fields) | {key}
        fields = []
        for index, (name, type_name) in enumerate(entity.fields.items()):
            attr = _attr_for(name, taken)
            taken.add(attr)
            target = referenced_entity(type_name)
            nullable = target is not None and reaches(target, entity.name)
            fields.append(FieldPlan(name, attr, type_name, target, nullable, index))
        partial.append(EntityPlan(entity.name, module, key, entity.description, tuple(fields), ()))
    entities = tuple(
        EntityPlan(
            entity.name,
            entity.module,
            entity.key,
            entity.description,
            entity.fields,
            tuple(
                (other.name, field)
                for other in partial
                for field in other.references
                if field.target == entity.name
            ),
        )
        for entity in partial
    )
    return Plan(spec, entities)


def _attr_for(name: str, taken: set[str]) -> str:
    if not (name.startswith(("_", "model_")) or name in BASEMODEL_NAMES):
        return name
    attr = "f_" + name.lstrip("_")
    while attr in taken:
        attr += "_"
    return attr
