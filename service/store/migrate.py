"""Alembic, driven from code: upgrade to head, and tell whether a database is at head.

Alembic's async env.py calls ``asyncio.run()``, so ``upgrade`` must run outside any event loop
(the command line calls it before starting one; async callers use ``asyncio.to_thread``).
"""

from __future__ import annotations

import functools
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from service.settings import PROJECT_ROOT
from service.store.db import Connection, connect_error, sqlalchemy_url

# Whether the database has Alembic's version table at all (a fresh database has not).
SELECT_VERSION_TABLE_EXISTS = """
SELECT to_regclass('alembic_version') IS NOT NULL
"""

# The revisions the database is at (one per branch head).
SELECT_REVISIONS = """
SELECT version_num
FROM alembic_version
"""


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["url"] = sqlalchemy_url(url)
    return config


def upgrade(url: str, revision: str = "head") -> None:
    try:
        command.upgrade(alembic_config(url), revision)
    except Exception as exc:
        if (error := connect_error(exc)) is None:
            raise
        raise error from exc


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("postgresql://unused"))


def revision_known(revision: str) -> bool:
    """Whether ``revision`` names one of this release's migrations (or ``head``)."""
    if revision == "head":
        return True
    return any(script.revision == revision for script in _scripts().walk_revisions())


def head_revisions() -> frozenset[str]:
    return frozenset(_scripts().get_heads())


SchemaState = Literal["at head", "ahead", "behind", "missing"]


def schema_state(current: frozenset[str]) -> SchemaState:
    """Where the database's schema stands for this code. ``ahead``: a newer release has
    migrated it (a revision this code does not know), which this code keeps working with
    while it is being replaced: migrations only add (see CONTRIBUTING.md)."""
    if not current:
        return "missing"
    if current == head_revisions():
        return "at head"
    for revision in current:
        try:
            if _scripts().get_revision(revision) is None:
                return "ahead"
        except CommandError:  # alembic's "no such revision"
            return "ahead"
    return "behind"


async def current_revisions(conn: Connection) -> frozenset[str]:
    exists = await conn.fetchval(SELECT_VERSION_TABLE_EXISTS)
    if not exists:
        return frozenset()
    rows = await conn.fetch(SELECT_REVISIONS)
    return frozenset(row["version_num"] for row in rows)
