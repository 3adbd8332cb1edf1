"""The ASGI app: routes, the runtime's parts as request dependencies, and the one table that maps
the error tree to HTTP statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any, Final

from litestar import Litestar, MediaType, Request, Response
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from service import errors
from service.access.tokens import load_or_create_secret
from service.api.context import Services, provide_services
from service.api.feed import feed
from service.api.generations import GenerationsController
from service.api.handoff import StreamingApp
from service.api.health import healthz, readyz
from service.api.metrics import metrics
from service.api.nul import refuse_nul
from service.api.openapi import Document
from service.api.owner_stream import owner_stream_token, stream_all
from service.api.page import index, static_files
from service.api.requests import observe_requests, on_response_start
from service.api.schemas import API_KEY, SECURITY_SCHEMES
from service.api.stats import stats
from service.api.stream import stream
from service.api.viewer import Viewer
from service.api.viewer import assets as viewer_assets
from service.generation.providers.registry import available_providers
from service.observe.logs import get_logger
from service.runtime import open_runtime
from service.settings import Settings
from service.store.migrate import head_revisions
from service.streams.follow import Streams

log = get_logger(__name__)

STATUS_OF: dict[type[errors.GenstreamError], int] = {
    errors.InvalidRequest: 400,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.Gone: 410,
    errors.TooManyRequests: 429,
    errors.StoreUnavailable: 503,
}


# How long a client should wait before asking again while the database is unavailable: about
# what a PostgreSQL restart takes (a stream opened with a token waits on its own instead).
STORE_RETRY_AFTER_S: Final = 2
_HEADERS_OF: dict[int, dict[str, str]] = {
    401: {"WWW-Authenticate": "Bearer"},
    503: {"Retry-After": str(STORE_RETRY_AFTER_S)},
}


def _problem(
    status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response[dict[str, Any]]:
    headers = {**_HEADERS_OF.get(status, {}), **(headers or {})} or None
    return Response(
        {"status": status, "detail": detail, **extra},
        status_code=status,
        media_type=MediaType.JSON,
        headers=headers,
    )


def _service_error(_: Request[Any, Any, Any], exc: errors.GenstreamError) -> Response[Any]:
    status = next(code for cls, code in STATUS_OF.items() if isinstance(exc, cls))
    if isinstance(exc, errors.TooManyRequests):
        return _problem(status, str(exc), {"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, errors.Gone):
        return _problem(status, str(exc), reason=exc.reason, at=exc.at.isoformat())
    return _problem(status, str(exc))


def _validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    problems = exc.extra if isinstance(exc.extra, list) else []
    details = [
        f"{p.get('key') or 'body'}: {p.get('message')}" if isinstance(p, dict) else str(p)
        for p in problems
    ]
    detail = "; ".join(details) if details else str(exc.detail)
    return _problem(400, f"invalid request: {detail}", errors=problems)


def _http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    # Litestar's own headers: a 405's Allow (RFC 9110 requires it) lists the methods.
    return _problem(exc.status_code, str(exc.detail), dict(exc.headers or {}))


def _undecodable_body(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Litestar's JSON decoder lets these two escape on hostile bodies (bytes that are not
    UTF-8, arrays nested thousands deep); they are the caller's fault, so a 400."""
    what = "not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "nested too deeply"
    return _problem(400, f"invalid request: the body is {what}")


def _unexpected_error(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("request.crashed", exc_info=exc)
    return _problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal error")


def create_app(settings: Settings, database_url: str) -> Litestar:
    """The ASGI app for one process; ``database_url`` is resolved (embedded or given) already."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_runtime(settings, database_url, serves_streams=True) as runtime:
            assert runtime.hub is not None
            app.state.services = Services(
                settings=settings,
                pool=runtime.pool,
                reads=runtime.reads,
                hub=runtime.hub,
                listener=runtime.listener,
                streams=Streams(runtime.hub, settings.keepalive_s),
                token_secret=settings.stream_token_secret
                or load_or_create_secret(settings.secret_file),
                providers=available_providers(settings),
                head_revisions=head_revisions(),
            )
            yield

    providers = available_providers(settings)
    document = Document(providers=providers)
    return StreamingApp(
        route_handlers=[
            GenerationsController,
            stream,
            stream_all,
            owner_stream_token,
            feed,
            stats,
            healthz,
            readyz,
            metrics,
            index,
            static_files,
            viewer_assets,
        ],
        dependencies={"services": Provide(provide_services, sync_to_thread=False)},
        middleware=[observe_requests, refuse_nul],
        before_send=[on_response_start],
        lifespan=[lifespan],
        exception_handlers={
            errors.GenstreamError: _service_error,
            ValidationException: _validation_error,
            HTTPException: _http_error,
            UnicodeDecodeError: _undecodable_body,
            RecursionError: _undecodable_body,
            Exception: _unexpected_error,
        },
        request_max_body_size=settings.max_body_bytes,
        # Plain logging (configured by the command line): Litestar's default queues records
        # and flushes at exit, which uvicorn's SIGTERM re-raise skips, losing the last lines.
        logging_config=None,
        openapi_config=OpenAPIConfig(
            title="genstream",
            version=version("genstream"),
            path="/schema",
            components=Components(security_schemes=SECURITY_SCHEMES),
            security=[{API_KEY: []}],
            render_plugins=[
                document,
                Document(providers=providers, yaml_form=True),
                Viewer(document),
            ],
        ),
    )
