"""Stream tokens: what a browser's EventSource (which cannot send headers) shows instead of an
API key. A token names its scope (one generation, or ``ALL_RUNS``: every run of the key's
owner, for ``GET /api/stream``), the key it was issued through (so that revoking the key ends
the token) and an expiry, signed with HMAC-SHA256:
``<expiry unix seconds>.<key id, 32 hex digits>.<base64url HMAC of "<scope>.<key
id>.<expiry>">``, the scope being the generation id or ``*``: a token of one scope is never
valid for another. The expiry is at most ``EXPIRY_MAX_DIGITS`` ASCII digits and the signature
exactly ``SIGNATURE_CHARS`` base64url characters; anything else is malformed before any key or
clock is consulted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import re
import secrets
import time
from pathlib import Path
from typing import Final, Literal
from uuid import UUID

from service.errors import Unauthorized


def load_or_create_secret(path: Path) -> str:
    """The dev secret kept beside the embedded cluster, created on first use (mode 0600).

    Written to a temporary file and renamed into place, so a crash never leaves an empty
    secret behind; an empty file is treated as missing (an empty HMAC key is forgeable).
    """
    if path.exists() and (secret := path.read_text().strip()):
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    os.replace(temporary, path)
    return secret


EXPIRY_MAX_DIGITS: Final = 12  # unix seconds up to the year 33658
SIGNATURE_CHARS: Final = 43  # 32 bytes of HMAC-SHA256 in unpadded base64url
_TOKEN: Final = re.compile(
    rf"([0-9]{{1,{EXPIRY_MAX_DIGITS}}})\.([0-9a-f]{{32}})\.([A-Za-z0-9_-]{{{SIGNATURE_CHARS}}})"
)


ALL_RUNS: Final = "*"
Scope = UUID | Literal["*"]


def _signature(secret: str, scope: Scope, key_hex: str, expires: str) -> str:
    message = f"{scope}.{key_hex}.{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(
    secret: str, generation_id: Scope, ttl_s: int, key_id: UUID, *, now: float | None = None
) -> str:
    """A token for ``generation_id`` (or ``ALL_RUNS``), issued through the API key ``key_id``:
    revoking that key ends the token too (the stream checks the key is live)."""
    # Rounded up: a token lives at least its ttl (down, a 1 s token could be dead at birth).
    expires = str(math.ceil((time.time() if now is None else now) + ttl_s))
    return f"{expires}.{key_id.hex}.{_signature(secret, generation_id, key_id.hex, expires)}"


def verify(secret: str, generation_id: Scope, token: str, *, now: float | None = None) -> UUID:
    """The id of the key the token was issued through, once its MAC and expiry check out.

    The MAC is checked over the token's text as sent, BEFORE anything is parsed out of it: an
    unauthenticated caller's text meets one bounded regex and one HMAC, never ``int()``.
    Whether that key is still live is the caller's to ask (it needs the database)."""
    shape = _TOKEN.fullmatch(token)
    if shape is None:
        raise Unauthorized("malformed stream token")
    expires_text, key_hex, signature = shape.groups()
    expected = _signature(secret, generation_id, key_hex, expires_text)
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized(
            "stream token is not valid for "
            + ("every run (GET /api/stream)" if generation_id == ALL_RUNS else "this generation")
        )
    if int(expires_text) < (time.time() if now is None else now):
        raise Unauthorized("stream token expired")
    return UUID(hex=key_hex)
