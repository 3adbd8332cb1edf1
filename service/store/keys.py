"""SQL of API keys. Keys are stored as SHA-256 digests: they are 256-bit random tokens, so a
fast hash is enough (no password stretching needed) and lookups stay one index probe.

Nothing about a key is cached in a process: every request reads the key's row, so a key
revoked (or expired) in one process is refused by every process from the next request on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple
from uuid import UUID

from asyncpg import Record

from service.store.db import Connection
from service.store.sql import numbered


class NewKey(NamedTuple):
    """INSERT_KEY's parameters; the field order is the ``$n`` numbering (see ``sql.py``)."""

    key_id: UUID
    owner: str
    key_hash: bytes  # SHA-256 of the key
    prefix: str  # the key's first characters, to tell keys apart in a list
    is_admin: bool
    expires_in_s: float | None  # None: never
    max_active_runs: int | None  # None: the deployment's default
    runs_per_minute: int | None
    max_streams: int | None


# Store an API key, its expiry counted from the database's clock.
INSERT_KEY = numbered(
    """
INSERT INTO api_keys
    (id, owner, key_hash, prefix, is_admin, expires_at,
     max_active_runs, runs_per_minute, max_streams)
VALUES (
    :key_id,
    :owner,
    :key_hash,
    :prefix,
    :is_admin,
    clock_timestamp() + make_interval(secs => :expires_in_s),
    :max_active_runs,
    :runs_per_minute,
    :max_streams
)
""",
    NewKey._fields,
)

# What a live key speaks for (a select list, not a query), and what makes a key live.
KEY_OWNER_COLUMNS = """
    id,
    owner,
    is_admin,
    max_active_runs,
    runs_per_minute,
    max_streams
"""
LIVE = """
    revoked_at IS NULL
    AND (expires_at IS NULL OR expires_at > clock_timestamp())
"""

# The live key with digest $1, with its quotas; marks it used, at most once a minute (a write
# per request would cost every request a row lock and WAL).
SELECT_LIVE_KEY = f"""
WITH live AS (
    SELECT {KEY_OWNER_COLUMNS}, last_used_at
    FROM api_keys
    WHERE key_hash = $1
      AND {LIVE}
),
touched AS (
    UPDATE api_keys
    SET last_used_at = clock_timestamp()
    FROM live
    WHERE api_keys.id = live.id
      AND (live.last_used_at IS NULL OR live.last_used_at < clock_timestamp() - interval '1 minute')
)
SELECT {KEY_OWNER_COLUMNS}
FROM live
"""

# Key $1 if it is still live: what a stream token issued through it checks.
SELECT_LIVE_KEY_BY_ID = f"""
SELECT {KEY_OWNER_COLUMNS}
FROM api_keys
WHERE id = $1
  AND {LIVE}
"""

# Every key, newest first, as an operator lists them (never the digest).
SELECT_KEYS = """
SELECT
    id,
    owner,
    prefix,
    is_admin,
    created_at,
    expires_at,
    last_used_at,
    revoked_at,
    max_active_runs,
    runs_per_minute,
    max_streams
FROM api_keys
ORDER BY created_at DESC, id
"""

# Revoke key $1 (the first revocation's time stays); returns its owner, or no row if unknown.
UPDATE_REVOKE_KEY = """
UPDATE api_keys
SET revoked_at = coalesce(revoked_at, clock_timestamp())
WHERE id = $1
RETURNING owner
"""


@dataclass(frozen=True, slots=True)
class KeyOwner:
    """Who a live key speaks for, and the quotas it carries (None: the default)."""

    owner: str
    is_admin: bool
    key_id: UUID
    max_active_runs: int | None = None
    runs_per_minute: int | None = None
    max_streams: int | None = None


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key as an operator sees it in ``keys list``: everything but its secret."""

    id: UUID
    owner: str
    prefix: str
    is_admin: bool
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    max_active_runs: int | None
    runs_per_minute: int | None
    max_streams: int | None


async def insert_key(conn: Connection, key: NewKey) -> None:
    await conn.execute(INSERT_KEY, *key)


async def select_live_key(conn: Connection, key_hash: bytes) -> KeyOwner | None:
    return key_owner(await conn.fetchrow(SELECT_LIVE_KEY, key_hash))


async def select_live_key_by_id(conn: Connection, key_id: UUID) -> KeyOwner | None:
    return key_owner(await conn.fetchrow(SELECT_LIVE_KEY_BY_ID, key_id))


def key_owner(row: Record | None) -> KeyOwner | None:
    """The key in ``row`` (the columns of ``KEY_OWNER_COLUMNS``)."""
    if row is None:
        return None
    return KeyOwner(
        owner=row["owner"],
        is_admin=row["is_admin"],
        key_id=row["id"],
        max_active_runs=row["max_active_runs"],
        runs_per_minute=row["runs_per_minute"],
        max_streams=row["max_streams"],
    )


async def select_keys(conn: Connection) -> list[KeyRow]:
    return [KeyRow(**dict(row)) for row in await conn.fetch(SELECT_KEYS)]


async def revoke_key(conn: Connection, key_id: UUID) -> str | None:
    """The revoked key's owner; None if there is no such key."""
    owner: str | None = await conn.fetchval(UPDATE_REVOKE_KEY, key_id)
    return owner
