"""``GET /api/events?after=CURSOR``: every generation's events, for admin keys.

For consumers of all events (analytics loaders, search indexers, audit sinks). The cursor is
opaque: pass back ``next_cursor`` as received; an empty page means "nothing new yet, ask
again with the same cursor". Events appear only once every transaction that could commit
before them has ended (``store/event_log.py``, ``SELECT_FEED``), so a long-running
transaction anywhere in the cluster delays the feed; it never makes it skip.
"""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from service.api.auth import require_admin
from service.api.context import Services
from service.api.cursors import OPAQUE_CURSOR, decode_feed_cursor, encode_feed_cursor
from service.store import event_log
from service.store.db import connection

MAX_FEED_PAGE = 1000


@get(
    "/api/events",
    operation_id="feed",
    summary="Every generation's events (admin)",
    description=(
        "Every generation's events, for admin keys, in an order that is safe against concurrent"
        " commits: an event appears only once nothing that could commit before it is still "
        "open. Pass `next_cursor` back as `after`; an empty page means nothing new yet."
    ),
)
async def feed(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    after: Annotated[str | None, QueryParameter(schema_extra=OPAQUE_CURSOR)] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=MAX_FEED_PAGE)] = 100,
) -> Response[bytes]:
    await require_admin(request, services, "global feed")
    position = decode_feed_cursor(after)
    async with connection(services.pool) as conn:
        events = await event_log.select_feed(conn, position, limit)
    next_cursor = encode_feed_cursor(events[-1].position if events else position)
    # The stored JSON text goes out as is, as on the per-generation events endpoint.
    body = (
        '{"events":[' + ",".join(event.json for event in events)
        + f'],"next_cursor":"{next_cursor}"}}'
    )  # fmt: skip
    return Response(body.encode(), media_type="application/json")
