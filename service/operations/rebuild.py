"""Rebuilding the generation rows from their events: a row is a projection of its log, so the
log can always say what the row should hold (SQL in ``store/projections.py``)."""

from __future__ import annotations

from service.store import projections
from service.store.db import Pool, connection
from service.store.projections import Difference


async def find_differences(pool: Pool) -> list[Difference]:
    """Where a row no longer says what its events say (nothing is written)."""
    async with connection(pool) as conn:
        return await projections.select_differences(conn)


async def rebuild(pool: Pool) -> int:
    """Rewrite every row that differs from its events; returns how many did."""
    async with connection(pool) as conn:
        return await projections.rebuild(conn)
