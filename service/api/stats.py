"""``GET /api/stats``: the headline numbers of the caller's generations, from the analytics
views (docs/analytics.md has the SQL behind each, for deeper questions)."""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency, Provide

from service.api.auth import provide_caller
from service.api.context import Services
from service.api.schemas import Stats
from service.store import analytics
from service.store.db import connection
from service.store.keys import KeyOwner


@get(
    "/api/stats",
    dependencies={"caller": Provide(provide_caller)},
    operation_id="getStats",
    description=(
        "Counts by outcome, p50/p95 durations, time to the first event and file, tokens and "
        "recoveries of the caller's generations."
    ),
    summary="Headline analytics",
)
async def stats(caller: NamedDependency[KeyOwner], services: NamedDependency[Services]) -> Stats:
    async with connection(services.pool) as conn:
        found = await analytics.select_stats(conn, caller.owner)
    runs = found.runs
    return Stats.model_validate(
        {
            "generations": {
                key: runs[key]
                for key in ("total", "succeeded", "failed", "cancelled", "in_progress")
            },
            "duration_s": {"p50": runs["p50_duration_s"], "p95": runs["p95_duration_s"]},
            "to_first_event_s": {"p50": runs["p50_to_first_event_s"]},
            "to_first_file_s": {"p50": runs["p50_to_first_file_s"]},
            "tokens": found.tokens,
            "recoveries": {
                kind: found.recoveries.get(kind, 0)
                for kind in ("resumed", "phase_retry", "repair", "retried", "failed")
            },
        }
    )
