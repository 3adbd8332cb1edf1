"""Liveness and readiness: ``/readyz`` is 503 unless the database answers and its schema is
at this code's head or ahead of it (a newer release migrated it during a rolling upgrade)."""

from __future__ import annotations

import asyncio

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from service.api.context import Services
from service.api.schemas import NO_CREDENTIALS, Readiness
from service.errors import StoreUnavailable
from service.store.db import UNAVAILABLE_ERRORS, connection
from service.store.migrate import current_revisions, schema_state

READY_TIMEOUT_S = 2.0


# The database did not answer (within READY_TIMEOUT_S).
_UNREACHABLE: tuple[type[BaseException], ...] = (StoreUnavailable, *UNAVAILABLE_ERRORS)


@get(
    "/healthz",
    sync_to_thread=False,
    security=NO_CREDENTIALS,
    operation_id="healthz",
    description=("The process is up (it does not ask the database)."),
    summary="Liveness",
)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get(
    "/readyz",
    security=NO_CREDENTIALS,
    operation_id="readyz",
    description=(
        "200 when this process can serve: its database answers and its schema is at this code's"
        " migrations or ahead of them; else 503 with the reason."
    ),
    summary="Readiness",
    responses={
        503: ResponseSpec(
            data_container=Readiness,
            description="Not ready: the database is unreachable, or its schema is missing or "
            "behind this code's migrations (the body says which, with the revisions).",
        )
    },
)
async def readyz(services: NamedDependency[Services]) -> Response[dict[str, object]]:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), connection(services.pool) as conn:
            revisions = await current_revisions(conn)
    except _UNREACHABLE as exc:  # TimeoutError is one of them
        return Response(
            {"status": "unavailable", "detail": f"database unreachable: {exc}"},
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
        )
    state = schema_state(revisions)
    if state in ("behind", "missing"):
        return Response(
            {
                "status": "unavailable",
                "detail": "database schema is not at the migrations' head: run `make migrate`",
                "current": sorted(revisions),
                "head": sorted(services.head_revisions),
            },
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
        )
    # "ahead": a newer release migrated the database while this process runs; it keeps
    # serving until it is replaced (migrations only add), so a balancer must not drop it.
    return Response(
        {
            "status": "ready",
            "listener": services.listener.connected.is_set(),
            "schema": state,
        },
        status_code=HTTP_200_OK,
    )
