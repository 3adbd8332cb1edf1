"""The ``app`` package's core: its docstring, settings, in-process database and Litestar app.

These files hardly depend on the entities (a list of repositories, a list of controllers), so
each template is mostly the file as written. The store is a dict per entity behind async
methods, so the generated project runs and tests with no database server, and a real database
could replace ``app/database.py`` without touching the routes.
"""

from __future__ import annotations

from service.generation.providers.templates.layout import source
from service.generation.providers.templates.plan import Plan
from service.generation.providers.templates.quoting import docstring, py_str


def app_init(plan: Plan) -> str:
    text = f"{plan.spec.project}: a Litestar JSON API over an in-process store."
    if plan.spec.description:
        text += "\n\n" + plan.spec.description
    return source([docstring(text)])


def settings(plan: Plan) -> str:
    lines = [
        '"""Settings, read from environment variables when the app is created, with defaults.',
        "",
        "- ``APP_TITLE``: the API's title in its OpenAPI document (default: the project's name)",
        (
            "- ``APP_DEBUG``: ``1``, ``true``, ``yes`` or ``on`` "
            "turns on Litestar's debug mode (default off)"
        ),
        "- ``APP_MAX_PAGE_SIZE``: the most rows one list request answers (default 100)",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import os",
        "from collections.abc import Mapping",
        "from dataclasses import dataclass",
        "",
        'TRUE_WORDS = frozenset({"1", "true", "yes", "on"})',
        "",
        "",
        "@dataclass(frozen=True, slots=True)",
        "class Settings:",
        f"    title: str = {py_str(plan.spec.project)}",
        "    debug: bool = False",
        "    max_page_size: int = 100",
        "",
        "    @classmethod",
        "    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:",
        "        env = os.environ if environ is None else environ",
        "        defaults = cls()",
        '        max_page_size = int(env.get("APP_MAX_PAGE_SIZE", str(defaults.max_page_size)))',
        "        if max_page_size < 1:",
        (
            "            raise ValueError("
            'f"APP_MAX_PAGE_SIZE must be at least 1, got {max_page_size}")'
        ),
        "        return cls(",
        '            title=env.get("APP_TITLE", defaults.title),',
        '            debug=env.get("APP_DEBUG", "").strip().lower() in TRUE_WORDS,',
        "            max_page_size=max_page_size,",
        "        )",
    ]
    return source(lines)


def database(plan: Plan) -> str:
    lines = [
        '"""In-process storage: one async repository per entity, a dict of rows keyed by UUID.',
        "",
        (
            "Nothing is persisted and there is no database server: "
            "every ``Database()`` starts empty (the"
        ),
        ("tests empty the app's before each test). The methods are ``async`` so a real database"),
        (
            "could replace this module without changing the routes. "
            "None of them awaits anything, so each"
        ),
        "runs without interruption on the event loop, and a request's checks followed by its write",
        "cannot interleave with another request's write.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import builtins",
        "from collections.abc import Callable, Iterable",
        "from typing import Any, Generic, TypeVar",
        "from uuid import UUID",
        "",
        'T = TypeVar("T")',
        "",
        "# The repositories, named by the module of their entity.",
        "ENTITIES: tuple[str, ...] = (",
        *(f"    {py_str(entity.module)}," for entity in plan.entities),
        ")",
        "",
        "",
        "class Repository(Generic[T]):",
        '    """The rows of one entity, in creation order."""',
        "",
        "    def __init__(self, name: str) -> None:",
        "        self.name = name",
        "        self._rows: dict[UUID, T] = {}",
        "",
        "    async def create(self, row_id: UUID, row: T) -> T:",
        "        if row_id in self._rows:",
        '            raise KeyError(f"{self.name} {row_id} already exists")',
        "        self._rows[row_id] = row",
        "        return row",
        "",
        "    async def get(self, row_id: UUID) -> T | None:",
        "        return self._rows.get(row_id)",
        "",
        "    async def exists(self, row_id: UUID) -> bool:",
        "        return row_id in self._rows",
        "",
        (
            "    async def list(self, *, offset: int = 0, limit: int | None = None) -> "
            "builtins.list[T]:"
        ),
        "        rows = builtins.list(self._rows.values())",
        "        return rows[offset:] if limit is None else rows[offset : offset + limit]",
        "",
        "    async def update(self, row_id: UUID, row: T) -> T | None:",
        '        """The new row, or None when there is no row with this id."""',
        "        if row_id not in self._rows:",
        "            return None",
        "        self._rows[row_id] = row",
        "        return row",
        "",
        "    async def delete(self, row_id: UUID) -> bool:",
        '        """Whether there was a row to delete."""',
        "        return self._rows.pop(row_id, None) is not None",
        "",
        "    async def ids_where(self, predicate: Callable[[T], bool]) -> builtins.list[UUID]:",
        "        return [row_id for row_id, row in self._rows.items() if predicate(row)]",
        "",
        "    def clear(self) -> None:",
        "        self._rows.clear()",
        "",
        "",
        "class Database:",
        '    """Every entity\'s repository."""',
        "",
        "    def __init__(self, entities: Iterable[str] = ENTITIES) -> None:",
        "        self._repositories: dict[str, Repository[Any]] = {",
        "            name: Repository(name) for name in entities",
        "        }",
        "",
        "    def repository(self, name: str) -> Repository[Any]:",
        "        return self._repositories[name]",
        "",
        "    def clear(self) -> None:",
        '        """Empty every repository: each test starts from nothing, without the cost of a',
        '        new app."""',
        "        for repository in self._repositories.values():",
        "            repository.clear()",
    ]
    return source(lines)


def main(plan: Plan) -> str:
    lines = [
        '"""The application: one controller per entity, a health check, shared dependencies.',
        "",
        (
            "Handlers receive ``db`` (the app's Database) and ``settings`` "
            "by dependency injection. JSON uses"
        ),
        "the spec's field names (pydantic aliases, hence ``prefer_alias``).",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from litestar import Litestar, get",
        "from litestar.datastructures import State",
        "from litestar.di import Provide",
        "from litestar.openapi.config import OpenAPIConfig",
        "from litestar.plugins.pydantic import PydanticPlugin",
        "",
        *(
            f"from app.api import {entity.module} as {entity.module}_api"
            for entity in plan.entities
        ),
        "from app.database import Database",
        "from app.settings import Settings",
        "",
        "",
        '@get("/health")',
        "async def health() -> dict[str, str]:",
        '    """Liveness: answers while the process serves requests."""',
        '    return {"status": "ok"}',
        "",
        "",
        "def create_app(settings: Settings | None = None) -> Litestar:",
        (
            '    """A new app with its own, empty database (also ``app.state.database``); '
            "settings from"
        ),
        '    the environment by default."""',
        "    app_settings = Settings.from_env() if settings is None else settings",
        "    database = Database()",
        "",
        "    async def provide_database() -> Database:",
        "        return database",
        "",
        "    async def provide_settings() -> Settings:",
        "        return app_settings",
        "",
        "    return Litestar(",
        "        route_handlers=[",
        "            health,",
        *(f"            {entity.module}_api.{entity.name}Controller," for entity in plan.entities),
        "        ],",
        "        dependencies={",
        '            "db": Provide(provide_database),',
        '            "settings": Provide(provide_settings),',
        "        },",
        "        plugins=[PydanticPlugin(prefer_alias=True)],",
        '        state=State({"database": database}),',
        '        openapi_config=OpenAPIConfig(title=app_settings.title, version="0.1.0"),',
        "        debug=app_settings.debug,",
        "    )",
        "",
        "",
        "app = create_app()",
    ]
    return source(lines)
