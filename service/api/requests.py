"""Every request's identity, log line, metrics and span.

``observe_requests`` (middleware) gives the request an id (the caller's ``X-Request-ID`` when
it is a sane token, else a new one), binds it to every log line logged while handling it, and
opens its span (continuing a caller's ``traceparent``). ``on_response_start`` (a before-send
hook, so that it also sees the responses Litestar makes outside the middleware: an unknown
route, a request refused by another middleware) returns the id in ``X-Request-ID``, counts
the response by route and status, and logs one line for it.
"""

from __future__ import annotations

import re
import time
from typing import Final
from uuid import uuid4

from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from service.observe import logs, metrics, traces

REQUEST_ID_HEADER: Final = "X-Request-ID"
_STATE_KEY: Final = "genstream.request"
_PROBES: Final = frozenset({"/healthz", "/readyz", "/metrics"})
_SANE_ID: Final = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

log = logs.get_logger("service.requests")


def request_id(incoming: str | None) -> str:
    """The caller's id when it is one a log line can carry safely, else a new one."""
    if incoming is not None and _SANE_ID.fullmatch(incoming):
        return incoming
    return uuid4().hex


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def observe_requests(app: ASGIApp) -> ASGIApp:
    """Litestar middleware (first in the list, so that it wraps the others)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        rid = request_id(_header(scope, b"x-request-id"))
        scope["state"][_STATE_KEY] = (rid, time.perf_counter())
        carrier = None
        if traces.enabled() and (parent := _header(scope, b"traceparent")) is not None:
            carrier = {"traceparent": parent}
            if (state := _header(scope, b"tracestate")) is not None:
                carrier["tracestate"] = state
        route = scope.get("path_template") or scope["path"]
        with (
            logs.bound_contextvars(request_id=rid),
            traces.continuing(
                f"{scope['method']} {route}", carrier, http_method=scope["method"], route=route
            ),
        ):
            await app(scope, receive, send)

    return middleware


async def on_response_start(message: Message, scope: Scope) -> None:
    """Before-send hook: the response's headers are going out."""
    if message["type"] != "http.response.start" or scope["type"] != ScopeType.HTTP:
        return
    method = scope["method"]
    state = scope.get("state", {})
    rid, started = state.get(_STATE_KEY) or (request_id(_header(scope, b"x-request-id")), None)
    MutableScopeHeaders.from_message(message)[REQUEST_ID_HEADER] = rid
    status = int(message["status"])
    route = scope.get("path_template") or "unmatched"
    seconds = time.perf_counter() - started if started is not None else 0.0
    metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
    metrics.HTTP_SECONDS.labels(route).observe(seconds)
    query = scope["query_string"].decode("latin-1")
    # Probes and scrapes come every few seconds from machines: only at debug level.
    write = log.debug if route in _PROBES and status < 400 else log.info
    write(
        "request",
        request_id=rid,
        method=method,
        path=f"{scope['path']}?{query}" if query else scope["path"],
        route=route,
        status=status,
        ms=round(seconds * 1000, 2),
        client=(scope.get("client") or ("", 0))[0],
    )
