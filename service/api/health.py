"""Liveness and readiness: ``/readyz`` is 503 unless the database answers and is at head."""

from __future__ import annotations

import asyncio

from litestar import Response, get
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from service.api.context import Services
from service.store.db import UNAVAILABLE_ERRORS
from service.store.migrate import current_revisions

READY_TIMEOUT_S = 2.0


@get("/healthz", sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@get("/readyz")
async def readyz(services: NamedDependency[Services]) -> Response[dict[str, object]]:
    try:
        async with asyncio.timeout(READY_TIMEOUT_S), services.pool.acquire() as conn:
            revisions = await current_revisions(conn)
    except UNAVAILABLE_ERRORS as exc:  # TimeoutError is one of them
        return Response(
            {"status": "unavailable", "detail": f"database unreachable: {exc}"},
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
        )
    if revisions != services.head_revisions:
        return Response(
            {
                "status": "unavailable",
                "detail": "database schema is not at the migrations' head: run `make migrate`",
                "current": sorted(revisions),
                "head": sorted(services.head_revisions),
            },
            status_code=HTTP_503_SERVICE_UNAVAILABLE,
        )
    return Response(
        {"status": "ready", "listener": services.listener.connected.is_set()},
        status_code=HTTP_200_OK,
    )
