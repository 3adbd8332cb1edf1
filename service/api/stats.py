"""``GET /api/stats``: the headline numbers of the caller's generations, from the analytics
views (docs/analytics.md has the SQL behind each, for deeper questions)."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.di import NamedDependency, Provide
from litestar.params import QueryParameter

from service.api.auth import provide_caller
from service.api.context import Services
from service.api.schemas import Stats
from service.store import analytics
from service.store.keys import KeyOwner

MAX_DAYS = 366


@get(
    "/api/stats",
    dependencies={"caller": Provide(provide_caller)},
    operation_id="getStats",
    description=(
        "Counts by outcome, p50/p95 durations, time to the first event and file, tokens (in "
        "all and per model) and recoveries of the caller's generations; and runs by outcome "
        "with p50/p95 durations for each UTC day of the last `days` days."
    ),
    summary="Headline analytics",
)
async def stats(
    caller: NamedDependency[KeyOwner],
    services: NamedDependency[Services],
    days: Annotated[
        int,
        QueryParameter(
            ge=1,
            le=MAX_DAYS,
            description="How many UTC calendar days `days` lists, today included.",
        ),
    ] = 30,
) -> Stats:
    async with services.reads.caught_up() as conn:
        found = await analytics.select_stats(conn, caller.owner, days)
    runs = found.runs
    return Stats.model_validate(
        {
            "generations": {
                key: runs[key]
                for key in ("total", "succeeded", "failed", "cancelled", "in_progress")
            },
            "duration_s": {"p50": runs["p50_duration_s"], "p95": runs["p95_duration_s"]},
            "to_first_event_s": {
                "p50": runs["p50_to_first_event_s"],
                "p95": runs["p95_to_first_event_s"],
            },
            "to_first_file_s": {
                "p50": runs["p50_to_first_file_s"],
                "p95": runs["p95_to_first_file_s"],
            },
            "tokens": found.tokens,
            "recoveries": {
                kind: found.recoveries.get(kind, 0)
                for kind in ("resumed", "phase_retry", "repair", "retried", "failed")
            },
            "days": found.days,
            "tokens_by_model": found.tokens_by_model,
        }
    )
