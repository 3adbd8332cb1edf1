"""The offline provider's templates: every file of a runnable Litestar + pydantic project.

The generated project is a JSON API with one controller per entity over an in-process store
(no database server), plus its own pytest suite. It needs only litestar, pydantic, pytest and
httpx. Rules the templates follow (the generated docstrings and README say them too):

- A reference keeps the spec's field name and holds the UUID of a row of the referenced
  entity; the API refuses (422) a reference to a row that does not exist, and refuses (409)
  to delete a row that other rows still refer to.
- A reference that is part of a reference cycle (``Employee.manager: Employee``, or
  ``A -> B -> A``) is nullable, default null, since otherwise no first row could ever be
  created. Every other field is required.
- The row id is ``id``; an entity with its own field ``id`` gets ``id_`` for its row id (one
  more ``_`` for as long as that is taken too), so the spec's field keeps its name.
- The JSON always uses the spec's names. A field pydantic cannot hold under its own name
  (a leading ``_``, the ``model_`` prefix, or a ``BaseModel`` method such as ``json``) lives on
  the attribute ``f_<name>`` with the spec's name as its alias.
- Field annotations never bind a name in the class body, so fields may be named like builtins
  or the modules the annotations use (``str``, ``type``, ``uuid``, ``datetime``).
- User text (descriptions) is rendered as Python/TOML literals or escaped Markdown, and never
  contains the answer format's block markers.
- An entity whose module would be a dunder such as ``__init__`` is refused (ValueError).

Everything is a pure function of the spec: the same spec gives byte-identical files.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass

from service.spec import Spec, module_name, referenced_entity

LINE = 100  # the generated code's line length

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

_WRONG_VALUES = {
    "str": "12345",
    "int": "'not a number'",
    "float": "'not a number'",
    "bool": "'not a boolean'",
    "datetime": "'not a date'",
    "uuid": "'not-a-uuid'",
}


# --- literals -------------------------------------------------------------------------------


def py_str(text: str) -> str:
    """A Python string literal of any text; ``<`` escaped where the text has ``<<<`` so a file
    never contains the answer format's markers."""
    literal = repr(text)
    return literal.replace("<", "\\x3c") if "<<<" in literal else literal


def docstring(text: str, indent: str = "") -> str:
    """A docstring statement for any text: triple-quoted when that is safe, else a literal."""
    plain = (
        all(char == "\n" or char.isprintable() for char in text)
        and "\\" not in text
        and '"""' not in text
        and not text.endswith('"')
        and "<<<" not in text
    )
    if not plain:
        return indent + py_str(text)
    lines = text.split("\n")
    body = "\n".join([lines[0]] + [indent + line if line else "" for line in lines[1:]])
    closing = f"\n{indent}" if len(lines) > 1 else ""
    return f'{indent}"""{body}{closing}"""'


def toml_str(text: str) -> str:
    """A TOML basic string of any text."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F or (char == "<" and "<<<" in text):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")  # a lone surrogate cannot be written in UTF-8
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def markdown_text(text: str) -> str:
    return html.escape(text.encode("utf-8", "replace").decode("utf-8"), quote=False)


# --- the plan: names every template agrees on -----------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldPlan:
    name: str  # the spec's name, used in JSON
    attr: str  # the pydantic attribute
    type_name: str  # the spec's type
    target: str | None  # the referenced entity
    nullable: bool  # a reference in a reference cycle
    index: int

    @property
    def aliased(self) -> bool:
        return self.attr != self.name

    @property
    def annotation(self) -> str:
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
        """A Python literal for a valid value (references are handled by the caller)."""
        i = self.index
        if self.type_name == "str":
            return py_str(f"{('sample', 'changed')[variant]} {self.name}")
        if self.type_name == "int":
            return str((40 + i, 7 + i)[variant])
        if self.type_name == "float":
            return repr((1.5 + i, 2.25 + i)[variant])
        if self.type_name == "bool":
            return ("True", "False")[variant]
        if self.type_name == "datetime":
            return py_str(("2024-01-02T03:04:05Z", "2025-06-07T08:09:10Z")[variant])
        return py_str(f"{('00000000', 'ffffffff')[variant]}-0000-4000-8000-{i:012x}")

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
        return tuple(f for f in self.fields if f.target)


@dataclass(frozen=True, slots=True)
class Plan:
    spec: Spec
    entities: tuple[EntityPlan, ...]

    def entity(self, name: str) -> EntityPlan:
        return next(e for e in self.entities if e.name == name)


def _attr_for(name: str, taken: set[str]) -> str:
    if not (name.startswith(("_", "model_")) or name in BASEMODEL_NAMES):
        return name
    attr = "f_" + name.lstrip("_")
    while attr in taken:
        attr += "_"
    return attr


def plan(spec: Spec) -> Plan:
    edges = {
        e.name: {t for t in map(referenced_entity, e.fields.values()) if t} for e in spec.entities
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
            e.name,
            e.module,
            e.key,
            e.description,
            e.fields,
            tuple((o.name, f) for o in partial for f in o.references if f.target == e.name),
        )
        for e in partial
    )
    return Plan(spec, entities)


def wrap_def(name: str, params: str, returns: str) -> list[str]:
    """A def line, its parameters on their own line when it would be too long."""
    line = f"def {name}({params}) -> {returns}:"
    if len(line) <= LINE:
        return [line]
    return [f"def {name}(", f"    {params},", f") -> {returns}:"]


def def_test(name: str) -> str:
    return "\n".join(wrap_def(name, "client: TestClient[Any]", "None"))


def all_list(names: Iterable[str]) -> str:
    """An ``__all__`` statement, one name a line when they do not fit on one."""
    literals = [py_str(name) for name in names]
    line = f"__all__ = [{', '.join(literals)}]\n"
    if len(line) <= LINE + 1:
        return line
    return "__all__ = [\n" + "".join(f"    {literal},\n" for literal in literals) + "]\n"


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}_{number}", number + 1
    taken.add(candidate)
    return candidate


# --- core -----------------------------------------------------------------------------------


def pyproject(p: Plan) -> str:
    description = p.spec.description or f"{p.spec.project}: a JSON API generated by genstream"
    return f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{p.spec.project}"
version = "0.1.0"
description = {toml_str(description)}
readme = "README.md"
requires-python = ">=3.11"
dependencies = [
    "litestar>=2.25,<3",
    "pydantic>=2.7,<3",
]

[project.optional-dependencies]
dev = [
    "pytest>=8",
    "httpx>=0.27",
]

[tool.setuptools.packages.find]
include = ["app*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
pythonpath = ["."]
addopts = "-ra"
"""


def app_init(p: Plan) -> str:
    text = f"{p.spec.project}: a Litestar JSON API over an in-process store."
    if p.spec.description:
        text += "\n\n" + p.spec.description
    return docstring(text) + "\n"


def settings(p: Plan) -> str:
    return f'''"""Settings, read from environment variables when the app is created, with defaults.

- ``APP_TITLE``: the API's title in its OpenAPI document (default: the project's name)
- ``APP_DEBUG``: ``1``, ``true``, ``yes`` or ``on`` turns on Litestar's debug mode (default off)
- ``APP_MAX_PAGE_SIZE``: the most rows one list request answers (default 100)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

TRUE_WORDS = frozenset({{"1", "true", "yes", "on"}})


@dataclass(frozen=True, slots=True)
class Settings:
    title: str = {py_str(p.spec.project)}
    debug: bool = False
    max_page_size: int = 100

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        max_page_size = int(env.get("APP_MAX_PAGE_SIZE", str(defaults.max_page_size)))
        if max_page_size < 1:
            raise ValueError(f"APP_MAX_PAGE_SIZE must be at least 1, got {{max_page_size}}")
        return cls(
            title=env.get("APP_TITLE", defaults.title),
            debug=env.get("APP_DEBUG", "").strip().lower() in TRUE_WORDS,
            max_page_size=max_page_size,
        )
'''


def database(p: Plan) -> str:
    names = "".join(f"    {py_str(e.module)},\n" for e in p.entities)
    return f'''"""In-process storage: one async repository per entity, a dict of rows keyed by UUID.

Nothing is persisted and there is no database server: every ``Database()`` starts empty (each
test builds a fresh app, and so a fresh database). The methods are ``async`` so a real database
could replace this module without changing the routes. None of them awaits anything, so each
runs without interruption on the event loop, and a request's checks followed by its write
cannot interleave with another request's write.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar
from uuid import UUID

T = TypeVar("T")

# The repositories, named by the module of their entity.
ENTITIES: tuple[str, ...] = (
{names})


class Repository(Generic[T]):
    """The rows of one entity, in creation order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._rows: dict[UUID, T] = {{}}

    async def create(self, row_id: UUID, row: T) -> T:
        if row_id in self._rows:
            raise KeyError(f"{{self.name}} {{row_id}} already exists")
        self._rows[row_id] = row
        return row

    async def get(self, row_id: UUID) -> T | None:
        return self._rows.get(row_id)

    async def exists(self, row_id: UUID) -> bool:
        return row_id in self._rows

    async def list(self, *, offset: int = 0, limit: int | None = None) -> builtins.list[T]:
        rows = builtins.list(self._rows.values())
        return rows[offset:] if limit is None else rows[offset : offset + limit]

    async def update(self, row_id: UUID, row: T) -> T | None:
        """The new row, or None when there is no row with this id."""
        if row_id not in self._rows:
            return None
        self._rows[row_id] = row
        return row

    async def delete(self, row_id: UUID) -> bool:
        """Whether there was a row to delete."""
        return self._rows.pop(row_id, None) is not None

    async def ids_where(self, predicate: Callable[[T], bool]) -> builtins.list[UUID]:
        return [row_id for row_id, row in self._rows.items() if predicate(row)]


class Database:
    """Every entity's repository."""

    def __init__(self, entities: Iterable[str] = ENTITIES) -> None:
        self._repositories: dict[str, Repository[Any]] = {{
            name: Repository(name) for name in entities
        }}

    def repository(self, name: str) -> Repository[Any]:
        return self._repositories[name]
'''


def main(p: Plan) -> str:
    imports = "".join(f"from app.api import {e.module} as {e.module}_api\n" for e in p.entities)
    handlers = "".join(f"            {e.module}_api.{e.name}Controller,\n" for e in p.entities)
    return f'''"""The application: one controller per entity, a health check, shared dependencies.

Handlers receive ``db`` (the app's Database) and ``settings`` by dependency injection. JSON uses
the spec's field names (pydantic aliases, hence ``prefer_alias``).
"""

from __future__ import annotations

from litestar import Litestar, get
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar.plugins.pydantic import PydanticPlugin

{imports}from app.database import Database
from app.settings import Settings


@get("/health")
async def health() -> dict[str, str]:
    """Liveness: answers while the process serves requests."""
    return {{"status": "ok"}}


def create_app(settings: Settings | None = None) -> Litestar:
    """A new app with its own, empty database; settings from the environment by default."""
    app_settings = Settings.from_env() if settings is None else settings
    database = Database()

    async def provide_database() -> Database:
        return database

    async def provide_settings() -> Settings:
        return app_settings

    return Litestar(
        route_handlers=[
            health,
{handlers}        ],
        dependencies={{
            "db": Provide(provide_database),
            "settings": Provide(provide_settings),
        }},
        plugins=[PydanticPlugin(prefer_alias=True)],
        openapi_config=OpenAPIConfig(title=app_settings.title, version="0.1.0"),
        debug=app_settings.debug,
    )


app = create_app()
'''


def readme(p: Plan) -> str:
    rows = []
    for e in p.entities:
        fields = ", ".join(
            f"`{f.name}`: "
            + (f"{f.target} id" + (" or null" if f.nullable else "") if f.target else f.type_name)
            for f in e.fields
        )
        rows.append(f"| {e.name} | `{e.path}`, `{e.path}/{{id}}` | `{e.key}`, {fields} |")
    about = f"\n{markdown_text(p.spec.description)}\n" if p.spec.description else ""
    return f"""# {p.spec.project}
{about}
A JSON API built with [Litestar](https://litestar.dev) and [pydantic](https://docs.pydantic.dev),
generated by genstream's offline templates. Rows live in memory (`app/database.py`, one
repository per entity): no database server, nothing persisted between runs.

## Requirements

Python 3.11 or newer with **litestar** and **pydantic**; the tests also need **pytest** and
**httpx**. Nothing else: an environment that has those four runs everything here.

```sh
python -m venv .venv && . .venv/bin/activate
pip install -e ".[dev]"
```

## Run the tests

```sh
pytest -q
```

## Serve

Serving HTTP needs an ASGI server, for example uvicorn (`pip install uvicorn`):

```sh
uvicorn app.main:app --reload
```

`GET /health` answers `{{"status": "ok"}}`; the OpenAPI document is at `/schema`.

## Endpoints

Each entity has `GET` (list, `?offset=` and `?limit=`), `POST` (create, `201`) on its
collection, and `GET`, `PUT` (replace every field) and `DELETE` (`204`) on `/{{id}}`; an
unknown id answers `404`, an invalid body `400`.

| entity | paths | fields |
|---|---|---|
{chr(10).join(rows)}

- A reference keeps the spec's field name and holds the referenced row's id. Creating or
  replacing a row whose reference points to no row answers `422`; deleting a row that other
  rows still refer to answers `409`.
- A reference that is part of a reference cycle (an entity referring to itself, or two
  entities referring to each other) may be null, so that a first row can be created.
- The row id is `id`, unless the entity has its own field `id`: then the row id is `id_`.

## Settings

Environment variables, read at start-up: `APP_TITLE` (OpenAPI title), `APP_DEBUG`
(`true` for Litestar's debug mode), `APP_MAX_PAGE_SIZE` (most rows per list request, 100).
"""


# --- models ---------------------------------------------------------------------------------


def models_init(p: Plan) -> str:
    imports = "".join(f"from app.models import {e.module}\n" for e in p.entities)
    names = all_list(e.module for e in p.entities)
    return f'"""The pydantic models, one module per entity."""\n\n{imports}\n{names}'


def model(p: Plan, e: EntityPlan) -> str:
    annotations = " ".join(f.annotation for f in e.fields)
    lines = [
        docstring(
            f"{e.name}: the pydantic models of its rows.\n\n"
            f"- ``{e.name}Create``: the body of create (POST) and replace (PUT).\n"
            f"- ``{e.name}``: a stored row, its id ``{e.key}`` (given by the server) first.\n\n"
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
        f"class {e.name}Create(pydantic.BaseModel):",
        docstring(f"What a client sends to create or replace one {e.name}.", "    "),
        "",
        '    model_config = pydantic.ConfigDict(extra="forbid")',
        "",
    ]
    lines += [f"    {f.attr}: {f.annotation}" for f in e.fields]
    lines += [
        "",
        "",
        f"class {e.name}(pydantic.BaseModel):",
        docstring(e.description or f"A stored {e.name}.", "    "),
        "",
        f"    {e.key}: uuid.UUID",
    ]
    lines += [f"    {f.attr}: {f.annotation}" for f in e.fields]
    return "\n".join(lines) + "\n"


# --- api ------------------------------------------------------------------------------------


def api_init(p: Plan) -> str:
    imports = "".join(f"from app.api import {e.module}\n" for e in p.entities)
    names = all_list(e.module for e in p.entities)
    return (
        '"""The HTTP routes: one module per entity, each with one Litestar controller."""\n\n'
        f"{imports}\n{names}"
    )


def api(p: Plan, e: EntityPlan) -> str:
    out = [
        docstring(
            f"HTTP routes of {e.name} at {e.path}: list, create, get, replace and delete.\n\n"
            "Unknown ids answer 404; a reference to a missing row answers 422; deleting a row\n"
            "that other rows refer to answers 409."
        ),
        "",
        "from __future__ import annotations",
        "",
        "from typing import Annotated",
        "from uuid import UUID, uuid4",
        "",
        "from litestar import Controller, delete, get, post, put",
        "from litestar.di import NamedDependency",
        "from litestar.exceptions import "
        + ("HTTPException, " if e.references or e.referrers else "")
        + "NotFoundException",
        "from litestar.params import FromPath, JSONBody, QueryParameter",
        "",
        "from app.database import Database",
        f"from app.models import {e.module} as models",
        "from app.settings import Settings",
        "",
        f"REPOSITORY = {py_str(e.module)}",
    ]
    if e.references:
        out += ["# (field, attribute, referenced entity, its repository) of every reference"]
        out += ["REFERENCES: tuple[tuple[str, str, str, str], ...] = ("]
        for f in e.references:
            target = p.entity(f.target or "")
            out.append(
                f"    ({py_str(f.name)}, {py_str(f.attr)}, {py_str(target.name)}, "
                f"{py_str(target.module)}),"
            )
        out += [")"]
    if e.referrers:
        out += ["# (entity, its repository, field, attribute) of every reference to this entity"]
        out += ["REFERRERS: tuple[tuple[str, str, str, str], ...] = ("]
        for name, f in e.referrers:
            out.append(
                f"    ({py_str(name)}, {py_str(p.entity(name).module)}, {py_str(f.name)}, "
                f"{py_str(f.attr)}),"
            )
        out += [")"]
    out += [
        "",
        "",
        "def not_found(row_id: UUID) -> NotFoundException:",
        f'    return NotFoundException(detail=f"no {e.name} with id {{row_id}}")',
        "",
        "",
        f"def to_row(row_id: UUID, data: models.{e.name}Create) -> models.{e.name}:",
        f"    return models.{e.name}.model_validate(",
        f"        {{{py_str(e.key)}: row_id, **data.model_dump(by_alias=True)}}",
        "    )",
    ]
    if e.references:
        out += [
            "",
            "",
            f"async def check_references(db: Database, data: models.{e.name}Create) -> None:",
            '    """422 naming every reference that points to no row of its entity."""',
            "    missing: list[dict[str, str]] = []",
            "    for field, attribute, entity, repository in REFERENCES:",
            "        value = getattr(data, attribute)",
            "        if value is not None and not await db.repository(repository).exists(value):",
            '            missing.append({"field": field, "entity": entity, "id": str(value)})',
            "    if missing:",
            '        names = ", ".join(item["field"] for item in missing)',
            "        raise HTTPException(",
            "            status_code=422,",
            '            detail=f"references to rows that do not exist: {names}",',
            '            extra={"missing": missing},',
            "        )",
        ]
    if e.referrers:
        out += [
            "",
            "",
            "async def find_referrers(db: Database, row_id: UUID) -> list[dict[str, str]]:",
            '    """The other rows that refer to this one."""',
            "    found: list[dict[str, str]] = []",
            "    for entity, repository, field, attribute in REFERRERS:",
            "        ids = await db.repository(repository).ids_where(",
            "            lambda row, attribute=attribute: getattr(row, attribute) == row_id",
            "        )",
            "        found.extend(",
            '            {"entity": entity, "field": field, "id": str(other)}',
            "            for other in ids",
            "            if not (repository == REPOSITORY and other == row_id)",
            "        )",
            "    return found",
        ]
    check = ["        await check_references(db, data)"] if e.references else []
    out += [
        "",
        "",
        f"class {e.name}Controller(Controller):",
        docstring(f"The rows of {e.name}.", "    "),
        "",
        f"    path = {py_str(e.path)}",
        f"    tags = [{py_str(e.name)}]",
        "",
        "    @get()",
        "    async def list_rows(",
        "        self,",
        "        db: NamedDependency[Database],",
        "        settings: NamedDependency[Settings],",
        "        offset: Annotated[int, QueryParameter(ge=0)] = 0,",
        "        limit: Annotated[int | None, QueryParameter(ge=1)] = None,",
        f"    ) -> list[models.{e.name}]:",
        '        """Rows in creation order; ``limit`` is capped at the max page size."""',
        "        size = settings.max_page_size",
        "        if limit is not None:",
        "            size = min(limit, size)",
        "        return await db.repository(REPOSITORY).list(offset=offset, limit=size)",
        "",
        "    @post()",
        "    async def create_row(",
        f"        self, db: NamedDependency[Database], data: JSONBody[models.{e.name}Create]",
        f"    ) -> models.{e.name}:",
        *check,
        "        row_id = uuid4()",
        "        row = to_row(row_id, data)",
        "        await db.repository(REPOSITORY).create(row_id, row)",
        "        return row",
        "",
        '    @get("/{row_id:uuid}")',
        "    async def get_row(",
        "        self, db: NamedDependency[Database], row_id: FromPath[UUID]",
        f"    ) -> models.{e.name}:",
        "        row = await db.repository(REPOSITORY).get(row_id)",
        "        if row is None:",
        "            raise not_found(row_id)",
        "        return row",
        "",
        '    @put("/{row_id:uuid}")',
        "    async def replace_row(",
        "        self,",
        "        db: NamedDependency[Database],",
        "        row_id: FromPath[UUID],",
        f"        data: JSONBody[models.{e.name}Create],",
        f"    ) -> models.{e.name}:",
        "        repository = db.repository(REPOSITORY)",
        "        if not await repository.exists(row_id):",
        "            raise not_found(row_id)",
        *check,
        "        row = to_row(row_id, data)",
        "        await repository.update(row_id, row)",
        "        return row",
        "",
        '    @delete("/{row_id:uuid}")',
        "    async def delete_row(",
        "        self, db: NamedDependency[Database], row_id: FromPath[UUID]",
        "    ) -> None:",
        "        repository = db.repository(REPOSITORY)",
        "        if not await repository.exists(row_id):",
        "            raise not_found(row_id)",
    ]
    if e.referrers:
        out += [
            "        referrers = await find_referrers(db, row_id)",
            "        if referrers:",
            "            raise HTTPException(",
            "                status_code=409,",
            f'                detail="other rows refer to this {e.name}",',
            '                extra={"referrers": referrers},',
            "            )",
        ]
    out += ["        await repository.delete(row_id)"]
    return "\n".join(out) + "\n"


# --- tests ----------------------------------------------------------------------------------


def tests_init(p: Plan) -> str:
    return '"""The tests of the generated API."""\n'


def conftest(p: Plan) -> str:
    return '''"""Fixtures: a test client over a fresh app (so an empty database) for every test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient

from app.main import create_app
from app.settings import Settings


@pytest.fixture
def client() -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(Settings())) as test_client:
        yield test_client
'''


def factories(p: Plan) -> str:
    out = [
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
    for e in p.entities:
        out += [
            "",
            "",
            *wrap_def(
                f"payload_{e.module}", "client: TestClient[Any], variant: int = 0", "dict[str, Any]"
            ),
            "    return {",
        ]
        for f in e.fields:
            if f.nullable:
                value = "None"
            elif f.target:
                target = p.entity(f.target)
                value = f"create_{target.module}(client)[{py_str(target.key)}]"
            else:
                value = f"({f.sample(0)}, {f.sample(1)})[variant]"
            line = f"        {py_str(f.name)}: {value},"
            if len(line) > LINE:
                line = (
                    f"        {py_str(f.name)}: (\n"
                    f"            {f.sample(0)},\n            {f.sample(1)},\n        )[variant],"
                )
            out.append(line)
        out += [
            "    }",
            "",
            "",
            f"def create_{e.module}(",
            "    client: TestClient[Any],",
            "    variant: int = 0,",
            "    overrides: dict[str, Any] | None = None,",
            ") -> dict[str, Any]:",
            f"    payload = {{**payload_{e.module}(client, variant), **(overrides or {{}})}}",
            f"    response = client.post({py_str(e.path)}, json=payload)",
            "    assert response.status_code == 201, response.text",
            "    row: dict[str, Any] = response.json()",
            "    return row",
        ]
    return "\n".join(out) + "\n"


def app_tests(p: Plan) -> str:
    first = p.entities[0]
    paths = "".join(f"        {py_str(e.path)},\n" for e in p.entities)
    return f'''"""Tests of the app as a whole: health, OpenAPI, settings."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from app.main import create_app
from app.settings import Settings
from tests import factories


def test_health_answers_ok(client: TestClient[Any]) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {{"status": "ok"}}


def test_openapi_lists_every_entity_path(client: TestClient[Any]) -> None:
    response = client.get("/schema/openapi.json")
    assert response.status_code == 200, response.text
    paths = response.json()["paths"]
    for path in (
{paths}    ):
        assert path in paths
        assert path + "/{{row_id}}" in paths


def test_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {{"APP_TITLE": "Renamed", "APP_DEBUG": "yes", "APP_MAX_PAGE_SIZE": "3"}}
    )
    assert settings == Settings(title="Renamed", debug=True, max_page_size=3)
    assert Settings.from_env({{}}) == Settings()


def test_list_pages_are_capped_at_the_max_page_size() -> None:
    with TestClient(app=create_app(Settings(max_page_size=1))) as client:
        first = factories.create_{first.module}(client)
        factories.create_{first.module}(client, variant=1)
        response = client.get({py_str(first.path)}, params={{"limit": 50}})
        assert response.status_code == 200, response.text
        assert response.json() == [first]
'''


def entity_tests(p: Plan, e: EntityPlan) -> str:
    m = e.module
    taken: set[str] = set()

    def name(text: str) -> str:
        return _unique(text, taken)

    wire = {f.name for f in e.fields}
    unknown = "unexpected"
    while unknown in wire:
        unknown += "_"
    required = [f for f in e.fields if not f.nullable]
    first = e.fields[0]
    out = [
        docstring(f"Tests of {e.path} ({e.name}): CRUD, unknown ids, invalid bodies, references."),
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
        f"PATH = {py_str(e.path)}",
        f"KEY = {py_str(e.key)}",
        "",
        "",
        def_test(name("test_create_answers_201_with_the_stored_row")),
        f"    payload = factories.payload_{m}(client)",
        "    response = client.post(PATH, json=payload)",
        "    assert response.status_code == 201, response.text",
        "    row = response.json()",
        "    factories.assert_matches(row, payload)",
        "    assert uuid.UUID(row[KEY])",
        "",
        "",
        def_test(name("test_get_returns_the_stored_row")),
        f"    row = factories.create_{m}(client)",
        '    response = client.get(f"{PATH}/{row[KEY]}")',
        "    assert response.status_code == 200, response.text",
        "    assert response.json() == row",
        "",
        "",
        def_test(name("test_list_returns_the_rows_in_creation_order")),
        f"    first = factories.create_{m}(client)",
        f"    second = factories.create_{m}(client, variant=1)",
        "    response = client.get(PATH)",
        "    assert response.status_code == 200, response.text",
        "    assert response.json() == [first, second]",
        '    assert client.get(PATH, params={"offset": 1, "limit": 1}).json() == [second]',
        "",
        "",
        def_test(name("test_replace_changes_every_field")),
        f"    row = factories.create_{m}(client)",
        f"    payload = factories.payload_{m}(client, variant=1)",
        '    response = client.put(f"{PATH}/{row[KEY]}", json=payload)',
        "    assert response.status_code == 200, response.text",
        "    replaced = response.json()",
        "    factories.assert_matches(replaced, payload)",
        "    assert replaced[KEY] == row[KEY]",
        '    assert client.get(f"{PATH}/{row[KEY]}").json() == replaced',
        "",
        "",
        def_test(name("test_delete_removes_the_row")),
        f"    row = factories.create_{m}(client)",
        '    response = client.delete(f"{PATH}/{row[KEY]}")',
        "    assert response.status_code == 204, response.text",
        '    assert client.get(f"{PATH}/{row[KEY]}").status_code == 404',
        "    assert client.get(PATH).json() == []",
        "",
        "",
        def_test(name("test_unknown_ids_answer_404")),
        '    missing = f"{PATH}/{uuid.uuid4()}"',
        "    assert client.get(missing).status_code == 404",
        f"    assert client.put(missing, json=factories.payload_{m}(client)).status_code == 404",
        "    assert client.delete(missing).status_code == 404",
        "",
        "",
        def_test(name("test_invalid_bodies_are_refused")),
        f"    payload = factories.payload_{m}(client)",
        f"    bodies: list[Any] = [[], {{**payload, {py_str(unknown)}: 1}}]",
        f"    bodies.append({{**payload, {py_str(first.name)}: {first.wrong_value}}})",
    ]
    if required:
        out.append(
            f"    bodies.append({{k: v for k, v in payload.items() if k != "
            f"{py_str(required[0].name)}}})"
        )
    out += [
        "    for body in bodies:",
        "        response = client.post(PATH, json=body)",
        "        assert response.status_code == 400, (body, response.text)",
        "    assert client.get(PATH).json() == []",
    ]
    for f in e.references:
        target = p.entity(f.target or "")
        out += [
            "",
            "",
            def_test(name(f"test_a_missing_{f.name}_is_refused")),
            f"    payload = {{**factories.payload_{m}(client), {py_str(f.name)}: str(uuid.uuid4())}}",  # noqa: E501
            "    response = client.post(PATH, json=payload)",
            "    assert response.status_code == 422, response.text",
            '    missing = response.json()["extra"]["missing"]',
            f'    assert [item["field"] for item in missing] == [{py_str(f.name)}]',
            "    assert client.get(PATH).json() == []",
            f"    row = factories.create_{m}(client)",
            '    response = client.put(f"{PATH}/{row[KEY]}", json=payload)',
            "    assert response.status_code == 422, response.text",
            '    assert client.get(f"{PATH}/{row[KEY]}").json() == row',
            "",
            "",
            def_test(name(f"test_an_existing_{f.name}_is_accepted")),
            f"    target = factories.create_{target.module}(client)",
            f"    payload = {{**factories.payload_{m}(client), "
            f"{py_str(f.name)}: target[{py_str(target.key)}]}}",
            "    response = client.post(PATH, json=payload)",
            "    assert response.status_code == 201, response.text",
            f"    assert response.json()[{py_str(f.name)}] == target[{py_str(target.key)}]",
        ]
    for referrer_name, f in e.referrers:
        r = p.entity(referrer_name)
        test = name(f"test_delete_is_refused_while_{r.module}_{f.name}_refers_to_it")
        out += [
            "",
            "",
            f"def {test}(client: TestClient[Any]) -> None:",
            f"    row = factories.create_{m}(client)",
            f"    referrer = factories.create_{r.module}(",
            f"        client, overrides={{{py_str(f.name)}: row[KEY]}}",
            "    )",
            '    response = client.delete(f"{PATH}/{row[KEY]}")',
            "    assert response.status_code == 409, response.text",
            '    assert client.get(f"{PATH}/{row[KEY]}").status_code == 200',
            f'    referrer_path = {py_str(r.path)} + "/" + referrer[{py_str(r.key)}]',
            "    assert client.delete(referrer_path).status_code == 204",
            '    assert client.delete(f"{PATH}/{row[KEY]}").status_code == 204',
        ]
    return "\n".join(out) + "\n"
