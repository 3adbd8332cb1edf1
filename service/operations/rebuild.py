"""Rebuilding the generation rows from their events: a row is a projection of its log, so the
log can always say what the row should hold (SQL in ``store/projections.py``). A row can only
be rebuilt from a sound log, so the check looks at the log itself too."""

from __future__ import annotations

from dataclasses import dataclass

from service.store import event_log, projections
from service.store.db import Pool, connection
from service.store.event_log import ChainBreak
from service.store.projections import Difference, LogDefect


@dataclass(frozen=True, slots=True)
class Findings:
    defects: list[LogDefect]  # the log itself is broken
    differences: list[Difference]  # a row does not say what its log says
    chain_breaks: list[ChainBreak]  # an event was edited or removed since it was stored


async def check(pool: Pool) -> Findings:
    """Every defect of the logs, every break of their chains and every row that differs from
    its log (nothing is written)."""
    async with connection(pool) as conn:
        return Findings(
            await projections.select_log_defects(conn),
            await projections.select_differences(conn),
            (await event_log.check_chains(conn)).breaks,
        )


async def find_log_defects(pool: Pool) -> list[LogDefect]:
    """Where a log has a seq gap, an unknown type, an event after its terminal one, or no
    terminal event under a row that says it finished (nothing is written)."""
    async with connection(pool) as conn:
        return await projections.select_log_defects(conn)


async def find_differences(pool: Pool) -> list[Difference]:
    """Where a row no longer says what its events say (nothing is written)."""
    async with connection(pool) as conn:
        return await projections.select_differences(conn)


async def rebuild(pool: Pool) -> int:
    """Rewrite every row that differs from its events; returns how many did."""
    async with connection(pool) as conn:
        return await projections.rebuild(conn)
