"""The error answers of every operation, in the OpenAPI document as the service gives them.

Litestar documents a 400 in its own exception shape (``{status_code, detail, extra}``) and no
other error. genstream answers every error as ``Problem`` (``{status, detail}``, plus
``errors`` on a 400 from validation), for reasons that follow from what an operation is: it
needs a key (401), an admin key (403), names a generation (404), has a body (413), reads the
database (503). One table here instead of a ``responses=`` on every handler, so a new
operation is described by the same rules.
"""

from __future__ import annotations

from typing import Final

from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIResponse, Operation, Reference

_PROBLEM: Final = Reference(ref="#/components/schemas/Problem")
_HTTP_METHODS: Final = ("get", "put", "post", "delete", "patch")
_ADMIN_ONLY: Final = frozenset({"/api/events", "/metrics"})
_NO_DATABASE: Final = frozenset({"/healthz"})
_CONFLICTS: Final = frozenset(
    {"/api/generations/{generation_id}/cancel", "/api/generations/{generation_id}/stream"}
)

_WHY: Final[dict[int, str]] = {
    400: "Invalid input: the detail names the parameter or field (validation adds `errors`).",
    401: "No API key, or an unknown, expired or revoked one (`WWW-Authenticate: Bearer`).",
    403: "An API key that is not an admin key.",
    404: "No such generation for this caller (another owner's is 404 too, never 403).",
    409: "The generation's state forbids it: cancelling a finished one, or replaying at the "
    "recorded pace one still running.",
    413: "The body is larger than GENSTREAM_MAX_BODY_BYTES.",
    503: "PostgreSQL is unavailable, or the process holds its limit of connections; the "
    "`Retry-After` header says when to ask again.",
}


def _answers(path: str, method: str, operation: Operation) -> list[int]:
    statuses = [400]
    if operation.security != [{}]:
        statuses.append(401)
    if path in _ADMIN_ONLY:
        statuses.append(403)
    if "{generation_id}" in path:
        statuses.append(404)
    if path in _CONFLICTS:
        statuses.append(409)
    if method in ("post", "put", "patch"):
        statuses.append(413)
    if path not in _NO_DATABASE:
        statuses.append(503)
    return statuses


def document_errors(document: OpenAPI) -> None:
    """Give every operation of ``document`` its error answers, each as a ``Problem``
    (replacing Litestar's 400; an answer an operation describes itself is kept)."""
    for path, item in (document.paths or {}).items():
        for method in _HTTP_METHODS:
            operation: Operation | None = getattr(item, method, None)
            if operation is None:
                continue
            responses = operation.responses = dict(operation.responses or {})
            for status in _answers(path, method, operation):
                existing = responses.get(str(status))
                if status != 400 and existing is not None:
                    continue  # the handler's own words for it
                responses[str(status)] = OpenAPIResponse(
                    description=_WHY[status],
                    content={"application/json": OpenAPIMediaType(schema=_PROBLEM)},
                )
