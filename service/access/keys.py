"""API keys: random 256-bit tokens, shown once, stored only as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets
from uuid import uuid4

from service.errors import InvalidRequest, Unauthorized
from service.store import keys
from service.store.db import Pool, connection
from service.store.keys import KeyOwner

KEY_PREFIX = "gsk_"


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def looks_like_api_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX)


async def create_key(pool: Pool, owner: str, *, is_admin: bool = False) -> str:
    if not owner.strip():
        raise InvalidRequest("an API key needs a non-empty owner")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    async with connection(pool) as conn:
        await keys.insert_key(conn, uuid4(), owner, hash_key(key), key[:10], is_admin)
    return key


async def authenticate(pool: Pool, key: str) -> KeyOwner:
    async with connection(pool) as conn:
        found = await keys.select_key(conn, hash_key(key))
    if found is None:
        raise Unauthorized("unknown or revoked API key")
    return found
