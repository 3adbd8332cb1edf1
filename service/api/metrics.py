"""``GET /metrics``: this process's metrics in Prometheus' text format, for admin keys.

Each process answers for itself (a scraper lists every process). ``GENSTREAM_METRICS_ADDRESS``
serves the same text without a key on a private address, for workers and for scrapers that
hold no key.
"""

from __future__ import annotations

import contextlib
from typing import Any

from litestar import Request, Response, get
from litestar.di import NamedDependency

from service.api.auth import require_admin
from service.api.context import Services
from service.errors import StoreUnavailable
from service.generation.runs import observe_queue
from service.observe import metrics as process_metrics


@get(
    "/metrics",
    operation_id="metrics",
    summary="This process's metrics (Prometheus text format)",
    description="Needs an admin API key. Counters, histograms and gauges named genstream_*; "
    "see docs/operations.md for what to alert on.",
    media_type=process_metrics.CONTENT_TYPE,
)
async def metrics(
    request: Request[Any, Any, Any], services: NamedDependency[Services]
) -> Response[bytes]:
    await require_admin(request, services, "metrics")
    # Unreachable: the queue's gauges keep their last values; genstream_db_up says why.
    with contextlib.suppress(StoreUnavailable):
        await observe_queue(services.pool)
    return Response(process_metrics.render(), media_type=process_metrics.CONTENT_TYPE)
