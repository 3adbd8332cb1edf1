"""service/store/tables.py is the reference the migrations are checked against: they must agree."""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.store.db import sqlalchemy_url
from service.store.tables import metadata


def _not_a_partition(name: str | None, type_: str, parent_names: Any) -> bool:
    """The log's partitions (store/partitions.py) come and go with time: the metadata names
    the partitioned parents only."""
    return not (type_ == "table" and name is not None and re.search(r"_(default|p\d{8})$", name))


def schema_diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(
        conn,
        opts={
            "compare_type": True,
            "compare_server_default": True,
            "include_name": _not_a_partition,
        },
    )
    return list(compare_metadata(context, metadata))


async def test_the_migrated_schema_matches_the_sqlalchemy_metadata(database_url: str) -> None:
    engine = create_async_engine(sqlalchemy_url(database_url))
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(schema_diff)
    finally:
        await engine.dispose()
    assert diff == []
