"""The errors the client raises, one class per answer a caller handles differently.

    GenstreamError          base: ``status`` (the HTTP status; None when no answer said so)
    ├── InvalidRequest      400 (and 413): ``errors``, each problem the server found
    ├── Unauthorized        401: no key, a wrong, expired or revoked one
    ├── Forbidden           403: this key may not do that
    ├── NotFound            404: no such generation or file (or another owner's)
    ├── Conflict            409: e.g. cancelling a finished generation
    ├── TooManyRequests     429: over a quota; ``retry_after`` in seconds
    ├── Unavailable         503: the database or the process is busy; ``retry_after``
    └── ProtocolError       the server broke its contract (a malformed event, a seq it
                            cannot fill)

``str(error)`` is the server's ``detail``, after the status. Connection failures are httpx's
own (``httpx.TransportError``), except inside ``follow``, which rides them out.
"""

from __future__ import annotations

import email.utils
import time
from typing import Any

import httpx


class GenstreamError(Exception):
    """Base of every error the client raises on purpose."""

    def __init__(self, detail: str, status: int | None = None) -> None:
        super().__init__(detail if status is None else f"HTTP {status}: {detail}")
        self.detail = detail
        self.status = status


class InvalidRequest(GenstreamError):
    def __init__(
        self, detail: str, status: int | None = 400, errors: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(detail, status)
        self.errors = errors or []


class Unauthorized(GenstreamError):
    pass


class Forbidden(GenstreamError):
    pass


class NotFound(GenstreamError):
    pass


class Conflict(GenstreamError):
    pass


class TooManyRequests(GenstreamError):
    def __init__(self, detail: str, status: int | None = 429, retry_after: float = 1.0) -> None:
        super().__init__(detail, status)
        self.retry_after = retry_after


class Unavailable(GenstreamError):
    def __init__(self, detail: str, status: int | None = 503, retry_after: float = 1.0) -> None:
        super().__init__(detail, status)
        self.retry_after = retry_after


class ProtocolError(GenstreamError):
    pass


class ChainBroken(ProtocolError):
    """The events do not chain: one was altered, left out or slipped in (incomplete or
    altered), wherever that happened between the log and this client."""


_BY_STATUS: dict[int, type[GenstreamError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
}


def retry_after(response: httpx.Response, default: float = 1.0) -> float:
    """The Retry-After header in seconds: delta-seconds or an HTTP date."""
    value = response.headers.get("retry-after", "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, when.timestamp() - time.time())


def error_of(response: httpx.Response) -> GenstreamError:
    """The error an answer of 400 or more stands for, with the server's ``detail``."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        detail: str = body["detail"]
    else:
        detail = response.text.strip()[:500] or response.reason_phrase
    if status == 429:
        return TooManyRequests(detail, status, retry_after(response))
    if status == 503:
        return Unavailable(detail, status, retry_after(response))
    if status in (400, 413):
        problems = body.get("errors") if isinstance(body, dict) else None
        return InvalidRequest(detail, status, problems if isinstance(problems, list) else None)
    return _BY_STATUS.get(status, GenstreamError)(detail, status)
