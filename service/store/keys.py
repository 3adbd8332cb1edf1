"""SQL of API keys. Keys are stored as SHA-256 digests: they are 256-bit random tokens, so a
fast hash is enough (no password stretching needed) and lookups stay one index probe."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from service.store.db import Connection

# Store an API key: id $1, owner $2, SHA-256 digest $3, display prefix $4, is_admin $5.
INSERT_KEY = """
INSERT INTO api_keys (id, owner, key_hash, prefix, is_admin)
VALUES ($1, $2, $3, $4, $5)
"""

# The owner of a live (not revoked) key by its digest ($1), and whether it is an admin's.
SELECT_KEY = """
SELECT
    owner,
    is_admin
FROM api_keys
WHERE key_hash = $1
  AND revoked_at IS NULL
"""


@dataclass(frozen=True, slots=True)
class KeyOwner:
    owner: str
    is_admin: bool


async def insert_key(
    conn: Connection, key_id: UUID, owner: str, key_hash: bytes, prefix: str, is_admin: bool
) -> None:
    await conn.execute(INSERT_KEY, key_id, owner, key_hash, prefix, is_admin)


async def select_key(conn: Connection, key_hash: bytes) -> KeyOwner | None:
    row = await conn.fetchrow(SELECT_KEY, key_hash)
    return KeyOwner(owner=row["owner"], is_admin=row["is_admin"]) if row else None
