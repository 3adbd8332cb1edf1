"""``GET /api/stream``: every run of the caller's on one Server-Sent Events connection.

Each frame is one event of one run (its JSON names the run and keeps the run's own seq), or
a run's snapshot; its ``id`` is an opaque cursor from which a reconnect resumes every run at
once (``streams/multiplex.py``). ``POST /api/stream-token`` gives EventSource a token for it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator
from typing import Annotated, Any, Final
from uuid import UUID

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import HeaderParameter, QueryParameter
from litestar.status_codes import HTTP_201_CREATED

from service.access import keys, tokens
from service.api.auth import bearer_key, provide_caller
from service.api.context import Services
from service.api.cursors import OWNER_CURSOR_MAX_CHARS, decode_owner_cursor, encode_owner_cursor
from service.api.handoff import HandedOffStream
from service.api.schemas import API_KEY, OVER_QUOTA, STREAM_TOKEN, StreamToken, problem
from service.api.stream import (
    KEEPALIVE_FRAME,
    SSE_HEADERS,
    OpenStreams,
    keepalives_until,
    sse_frame,
    with_stream_slot,
)
from service.errors import GenstreamError, StoreUnavailable, Unauthorized
from service.observe import metrics
from service.observe.logs import get_logger
from service.store.keys import KeyOwner
from service.streams import follow, multiplex
from service.streams.multiplex import OwnerCursor

log = get_logger(__name__)

PATH: Final = "/api/stream"
CURSOR: Final[dict[str, object]] = {
    "pattern": "^[A-Za-z0-9_-]*$",
    "maxLength": OWNER_CURSOR_MAX_CHARS,
    "description": "The `id` of the last frame read, as received: resume after it.",
}


async def _caller(
    request: Request[Any, Any, Any], services: Services, token: str | None
) -> KeyOwner | UUID:
    """The caller; or, for a token while PostgreSQL is unavailable, the key it names (the
    stream asks whether the key is live, and whose it is, once the database answers)."""
    if token is not None:
        if keys.looks_like_api_key(token):
            raise Unauthorized(
                "API keys are never accepted in URLs: use a stream_token from POST "
                "/api/stream-token, or the Authorization header"
            )
        key_id = tokens.verify(services.token_secret, tokens.ALL_RUNS, token)
        try:
            return await keys.live_key(services.pool, key_id)
        except StoreUnavailable:
            return key_id
    key = bearer_key(request)
    if key is None:
        raise Unauthorized("the stream needs ?token=<stream_token> or 'Authorization: Bearer'")
    return await keys.authenticate(services.pool, key)


async def owner_frames(
    services: Services, caller: KeyOwner | UUID, cursor: OwnerCursor, with_snapshots: bool
) -> AsyncGenerator[bytes, None]:
    """Counted and logged like a generation's stream (``api/stream.py``, ``frames``)."""
    opened_at = time.time()
    metrics.STREAMS_OPENED.inc()
    OpenStreams.count += 1
    reason, sent = "client_gone", 0
    try:
        yield f"retry: {services.settings.sse_retry_ms}\n\n".encode()
        if isinstance(caller, UUID):
            owners: list[KeyOwner] = []
            key_id = caller
            try:
                waiting = keepalives_until(
                    services, lambda: keys.live_key(services.pool, key_id), owners
                )
                async for keepalive in waiting:
                    yield keepalive
            except GenstreamError:
                reason = "ended"
                return  # revoked meanwhile: the reconnect gets the answer
            if not owners:
                reason = "shutdown"
                return
            caller = owners[0]
        items = multiplex.follow_owner(
            services.streams,
            services.pool,
            caller.owner,
            cursor,
            with_snapshots=with_snapshots,
            max_s=services.settings.all_runs_stream_max_s,
        )
        async with contextlib.aclosing(items):  # closed here: see api/stream.py
            async for item in items:
                if isinstance(item, follow.Keepalive):
                    metrics.KEEPALIVES_SENT.inc()
                    yield KEEPALIVE_FRAME
                    continue
                if isinstance(item, multiplex.CursorMark):
                    yield f"id: {encode_owner_cursor(item.cursor)}\n\n".encode()
                    continue
                sent += len(item)
                metrics.FRAMES_SENT.inc(len(item))
                yield "".join(
                    sse_frame(encode_owner_cursor(frame.cursor), frame.type, frame.json)
                    for frame in item
                ).encode()
        reason = "shutdown" if services.hub.closing else "max_age"
    except Exception:
        reason = "error"
        raise
    finally:
        OpenStreams.count -= 1
        metrics.STREAMS_CLOSED.labels(reason).inc()
        log.info(
            "stream.closed",
            scope="owner",
            reason=reason,
            events=sent,
            seconds=round(time.time() - opened_at, 3),
        )


@get(
    PATH,
    security=[{API_KEY: []}, {STREAM_TOKEN: []}],
    operation_id="streamAll",
    summary="Follow every run of yours on one connection (Server-Sent Events)",
    description=(
        "Every event of the caller's runs on one stream: a fresh one starts with the events of "
        "each unfinished run from its first (or its snapshot, with `snapshot=1`), then every "
        "event of every run as it is committed, runs created meanwhile included. Each frame's "
        "`id` is a cursor: reconnecting with it (`Last-Event-ID`, or `?after=`) resumes every "
        "run exactly after that frame. Authenticate with the API key (header) or a token from "
        "`POST /api/stream-token` (`?token=`)."
    ),
    media_type="text/event-stream",
    responses={
        429: OVER_QUOTA,
        503: problem("The database is unavailable and the caller sent an API key; Retry-After."),
    },
)
async def stream_all(
    request: Request[Any, Any, Any],
    services: NamedDependency[Services],
    token: Annotated[str | None, QueryParameter()] = None,
    after: Annotated[str | None, QueryParameter(schema_extra=CURSOR)] = None,
    last_event_id: Annotated[
        str | None, HeaderParameter(name="Last-Event-ID", schema_extra=CURSOR)
    ] = None,
    snapshot: Annotated[
        bool,
        QueryParameter(
            description="A fresh stream starts each unfinished run with its snapshot instead "
            "of its events so far."
        ),
    ] = False,
) -> HandedOffStream:
    # Both are checked when both are sent: a wrong one is a mistake whichever would win.
    from_query = decode_owner_cursor(after)
    cursor = decode_owner_cursor(last_event_id) if last_event_id else from_query
    try:
        caller = await _caller(request, services, token)
    except Unauthorized:
        metrics.STREAMS_REFUSED.labels("unauthorized").inc()
        raise
    body = owner_frames(services, caller, cursor, snapshot)
    return HandedOffStream(
        with_stream_slot(services, caller, body),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )


@post(
    "/api/stream-token",
    status_code=HTTP_201_CREATED,
    operation_id="issueOwnerStreamToken",
    summary="A stream token for every run of yours",
    description=(
        "A token for `GET /api/stream` (EventSource cannot send headers): valid for every run "
        "of the key's owner, until it expires or the key is revoked."
    ),
    dependencies={"caller": Provide(provide_caller)},
)
async def owner_stream_token(
    caller: NamedDependency[KeyOwner], services: NamedDependency[Services]
) -> StreamToken:
    ttl = services.settings.stream_token_ttl_s
    return StreamToken(
        stream_url=PATH,
        stream_token=tokens.issue(services.token_secret, tokens.ALL_RUNS, ttl, caller.key_id),
        expires_in=ttl,
    )
