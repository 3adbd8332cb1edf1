"""SQL of API keys. Keys are stored as SHA-256 digests: they are 256-bit random tokens, so a
fast hash is enough (no password stretching needed) and lookups stay one index probe."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from service.store.db import Connection

INSERT_KEY = """
INSERT INTO api_keys (id, owner, key_hash, prefix, is_admin)
VALUES ($1, $2, $3, $4, $5)
"""

SELECT_KEY = """
SELECT owner, is_admin
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
