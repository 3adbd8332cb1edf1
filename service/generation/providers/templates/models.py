"""The pydantic models: ``app/models/``, one module per entity.

Each entity gets two models: ``<Entity>Create``, the body a client sends (extra keys refused,
so a typo is a 400 and not a silently dropped field), and ``<Entity>``, a stored row with its
server-given id. Annotations use qualified names only (``uuid.UUID``, ``datetime.datetime``,
``typing.Annotated``) and never bind a name in the class body, so a field may be named like a
builtin or like the modules the annotations use (``str``, ``type``, ``uuid``, ``datetime``).
"""

from __future__ import annotations

from service.generation.providers.templates.layout import package_init, source
from service.generation.providers.templates.plan import EntityPlan, Plan
from service.generation.providers.templates.quoting import docstring


def models_init(plan: Plan) -> str:
    return package_init(
        "The pydantic models, one module per entity.",
        "app.models",
        [entity.module for entity in plan.entities],
    )


def model(plan: Plan, entity: EntityPlan) -> str:
    annotations = " ".join(field.annotation for field in entity.fields)
    lines = [
        docstring(
            f"{entity.name}: the pydantic models of its rows.\n\n"
            f"- ``{entity.name}Create``: the body of create (POST) and replace (PUT).\n"
            f"- ``{entity.name}``: a stored row, its id ``{entity.key}`` (given by the server) "
            "first.\n\n"
            "A reference keeps the spec's field name and holds the UUID of a row of the\n"
            "referenced entity; one in a reference cycle may be null. The row id is ``id``\n"
            "unless the entity has its own field ``id`` (then ``id_``). JSON always uses the\n"
            "spec's names: a field pydantic cannot hold under its own name lives on the\n"
            "attribute ``f_<name>``, aliased to its name."
        ),
        "",
        *(["import datetime"] if "datetime.datetime" in annotations else []),
        *(["import typing"] if "typing.Annotated" in annotations else []),
        "import uuid",
        "",
        "import pydantic",
        "",
        "",
        f"class {entity.name}Create(pydantic.BaseModel):",
        docstring(f"What a client sends to create or replace one {entity.name}.", "    "),
        "",
        '    model_config = pydantic.ConfigDict(extra="forbid")',
        "",
        *(f"    {field.attr}: {field.annotation}" for field in entity.fields),
        "",
        "",
        f"class {entity.name}(pydantic.BaseModel):",
        docstring(entity.description or f"A stored {entity.name}.", "    "),
        "",
        f"    {entity.key}: uuid.UUID",
        *(f"    {field.attr}: {field.annotation}" for field in entity.fields),
    ]
    return source(lines)
