"""The service's error tree. No HTTP types here: ``app.py`` maps each class to a status once
(``STATUS_OF``; a subclass gets its base's status).

GenstreamError
├── InvalidRequest           the caller asked for something malformed        -> 400
├── Unauthorized             no or bad credentials                           -> 401
├── Forbidden                authenticated, but this key may not do that     -> 403
├── NotFound                 no such thing, or it belongs to another owner   -> 404
├── Gone                     it was there, and retention removed it           -> 410
├── Conflict                 the thing is in a state that forbids the act    -> 409
│   ├── GenerationFinished   an append after the terminal event              -> 409
│   └── LeaseLost            a write by a worker whose run was taken over    -> 409
├── TooManyRequests          over a quota; says when to try again            -> 429
└── StoreUnavailable         the database cannot be reached                  -> 503
"""

from __future__ import annotations

from datetime import datetime


class GenstreamError(Exception):
    """Base of every error the service raises on purpose."""


class InvalidRequest(GenstreamError):
    pass


class Unauthorized(GenstreamError):
    pass


class NotFound(GenstreamError):
    pass


class Gone(GenstreamError):
    """It existed and retention removed it (a dropped run, a redacted file's content): unlike
    a 404, the answer says when and why, so a client stops asking."""

    def __init__(self, message: str, *, at: datetime, reason: str) -> None:
        super().__init__(message)
        self.at = at
        self.reason = reason


class Forbidden(GenstreamError):
    """Authenticated, but this key may not do that (an admin-only endpoint)."""


class Conflict(GenstreamError):
    pass


class GenerationFinished(Conflict):
    """The generation already has its terminal event; the log refuses anything after it."""


class LeaseLost(Conflict):
    """Another worker holds the run now (a newer attempt): this one must stop writing."""


class TooManyRequests(GenstreamError):
    """Over a quota (active runs, creates per minute, open streams): the act is refused, not
    queued, and ``retry_after_s`` says when the same request may succeed."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = max(1, retry_after_s)


class StoreUnavailable(GenstreamError):
    pass
