"""Stream tokens: what a browser's EventSource (which cannot send headers) shows instead of an
API key. A token names one generation and an expiry, signed with HMAC-SHA256:
``<expiry unix seconds>.<base64url signature of "<generation id>.<expiry>">``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
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


def _signature(secret: str, generation_id: UUID, expires: int) -> str:
    message = f"{generation_id}.{expires}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def issue(secret: str, generation_id: UUID, ttl_s: int, *, now: float | None = None) -> str:
    expires = int((time.time() if now is None else now) + ttl_s)
    return f"{expires}.{_signature(secret, generation_id, expires)}"


def verify(secret: str, generation_id: UUID, token: str, *, now: float | None = None) -> None:
    expires_text, _, signature = token.partition(".")
    if not (expires_text.isascii() and expires_text.isdigit()) or not signature:
        raise Unauthorized("malformed stream token")
    expires = int(expires_text)
    expected = _signature(secret, generation_id, expires)
    if not hmac.compare_digest(expected, signature):
        raise Unauthorized("stream token is not valid for this generation")
    if expires < (time.time() if now is None else now):
        raise Unauthorized("stream token expired")
