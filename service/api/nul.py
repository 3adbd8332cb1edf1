"""What every request must satisfy before any handler (or the static files) sees it.

No NUL in its path, query or headers. PostgreSQL stores no NUL in text and no file system
takes one in a name, so a NUL that reaches either is a 500 (or worse, a NUL-truncated name);
here it is a 400 that names where it was. JSON bodies are checked by their schema
(``service/spec.py``'s ``refuse_nul``, run by the request models), where the field's name
is known.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from service.errors import InvalidRequest


def refuse_nul(app: ASGIApp) -> ASGIApp:
    """Litestar middleware: ``InvalidRequest`` (400) for a NUL anywhere a client can put text
    outside the body."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            check_request(scope)
        await app(scope, receive, send)

    return middleware


def check_request(scope: Scope) -> None:
    if "\x00" in scope["path"]:
        raise InvalidRequest("the URL path must not contain NUL (%00)")
    query: bytes = scope["query_string"]
    if b"%00" in query or b"\x00" in query:  # the only spellings of NUL in a query string
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                raise InvalidRequest(
                    f"query parameter {name.replace(chr(0), '%00')!r} must not contain NUL (%00)"
                )
    for header, content in scope["headers"]:
        if b"\x00" in content:  # uvicorn refuses these itself; other servers may not
            raise InvalidRequest(f"header {header.decode('latin-1')!r} must not contain NUL")
