"""API keys: random 256-bit tokens, shown once, stored only as a SHA-256 digest.

A key may expire, and may carry its own quotas (``Quotas``; None keeps the deployment's
default). Revoking one takes effect on the next request in every process: nothing about a key
is cached (``store/keys.py``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from uuid import UUID, uuid4

from service.errors import InvalidRequest, NotFound, Unauthorized
from service.store import event_log, keys
from service.store.db import Pool, connection
from service.store.event_log import Head
from service.store.keys import KeyOwner, KeyRow, NewKey

KEY_PREFIX = "gsk_"
PREFIX_SHOWN = 10  # "gsk_" and six characters: enough to tell keys apart, useless to an attacker


@dataclass(frozen=True, slots=True)
class Quotas:
    """A key's own limits; None: the deployment's default setting."""

    max_active_runs: int | None = None
    runs_per_minute: int | None = None
    max_streams: int | None = None


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def looks_like_api_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX)


async def create_key(
    pool: Pool,
    owner: str,
    *,
    is_admin: bool = False,
    expires_in_s: float | None = None,
    quotas: Quotas = Quotas(),
) -> str:
    if not owner.strip():
        raise InvalidRequest("an API key needs a non-empty owner")
    if expires_in_s is not None and expires_in_s <= 0:
        raise InvalidRequest("a key's lifetime must be positive")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    new = NewKey(
        key_id=uuid4(),
        owner=owner,
        key_hash=hash_key(key),
        prefix=key[:PREFIX_SHOWN],
        is_admin=is_admin,
        expires_in_s=expires_in_s,
        max_active_runs=quotas.max_active_runs,
        runs_per_minute=quotas.runs_per_minute,
        max_streams=quotas.max_streams,
    )
    async with connection(pool) as conn:
        await keys.insert_key(conn, new)
    return key


async def authenticate(pool: Pool, key: str) -> KeyOwner:
    async with connection(pool) as conn:
        found = await keys.select_live_key(conn, hash_key(key))
    if found is None:
        raise Unauthorized("unknown, expired or revoked API key")
    return found


_ISSUER_GONE = "the API key this stream token was issued through is revoked or expired"


async def live_key(pool: Pool, key_id: UUID) -> KeyOwner:
    """The key a stream token was issued through, if it is still live (else 401)."""
    async with connection(pool) as conn:
        found = await keys.select_live_key_by_id(conn, key_id)
    if found is None:
        raise Unauthorized(_ISSUER_GONE)
    return found


async def live_key_and_head(pool: Pool, key_id: UUID, generation_id: UUID) -> tuple[KeyOwner, Head]:
    """``live_key`` and the run's head (404/410 if it is gone) in one round trip: what a stream
    opened with a token needs before it answers."""
    async with connection(pool) as conn:
        found = await event_log.select_key_and_head(conn, key_id, generation_id)
    if found is None:
        raise Unauthorized(_ISSUER_GONE)
    return found


async def list_keys(pool: Pool) -> list[KeyRow]:
    async with connection(pool) as conn:
        return await keys.select_keys(conn)


async def revoke_key(pool: Pool, key_id: UUID) -> str:
    """Revoke a key (again is harmless); its owner."""
    async with connection(pool) as conn:
        owner = await keys.revoke_key(conn, key_id)
    if owner is None:
        raise NotFound(f"no API key {key_id}")
    return owner
