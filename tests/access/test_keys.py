from __future__ import annotations

import hashlib
import re

import pytest

from service.access import keys
from service.errors import InvalidRequest, Unauthorized
from service.store.db import Pool

KEY_FORMAT = re.compile(r"^gsk_[A-Za-z0-9_-]{43}$")


async def test_a_new_key_has_the_prefix_and_256_bits_of_urlsafe_randomness(pool: Pool) -> None:
    created = {await keys.create_key(pool, "alice") for _ in range(5)}
    assert len(created) == 5
    for key in created:
        assert KEY_FORMAT.match(key), key
        assert keys.looks_like_api_key(key)


async def test_the_table_stores_the_digest_never_the_key(pool: Pool) -> None:
    key = await keys.create_key(pool, "alice")
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM api_keys")
        as_text = await conn.fetchval("SELECT string_agg(t::text, ' ') FROM api_keys AS t")
    assert len(rows) == 1
    row = rows[0]
    assert bytes(row["key_hash"]) == hashlib.sha256(key.encode()).digest()
    assert row["owner"] == "alice"
    assert key[:10].startswith("gsk_")
    assert row["prefix"] == key[:10]
    for value in row.values():
        assert key not in str(value)
        if isinstance(value, bytes):
            assert key.encode() not in value
    assert key not in as_text
    assert key[4:] not in as_text  # not even without its prefix


async def test_authenticate_accepts_a_created_key_and_names_its_owner(pool: Pool) -> None:
    alice = await keys.create_key(pool, "alice")
    root = await keys.create_key(pool, "ops", is_admin=True)
    found = await keys.authenticate(pool, alice)
    assert (found.owner, found.is_admin) == ("alice", False)
    found = await keys.authenticate(pool, root)
    assert (found.owner, found.is_admin) == ("ops", True)


@pytest.mark.parametrize(
    "candidate",
    ["", "gsk_", "gsk_" + "A" * 43, "not-a-key", "Bearer gsk_x"],
)
async def test_authenticate_rejects_an_unknown_key(pool: Pool, candidate: str) -> None:
    await keys.create_key(pool, "alice")
    with pytest.raises(Unauthorized):
        await keys.authenticate(pool, candidate)


async def test_authenticate_rejects_a_near_miss_of_a_real_key(pool: Pool) -> None:
    key = await keys.create_key(pool, "alice")
    for near in (key[:-1], key + "x", key.upper(), key.replace("gsk_", "GSK_"), f" {key}"):
        if near == key:
            continue
        with pytest.raises(Unauthorized):
            await keys.authenticate(pool, near)


async def test_a_revoked_key_is_rejected(pool: Pool) -> None:
    key = await keys.create_key(pool, "alice")
    async with pool.acquire() as conn:
        await conn.execute("UPDATE api_keys SET revoked_at = clock_timestamp()")
    with pytest.raises(Unauthorized):
        await keys.authenticate(pool, key)


@pytest.mark.parametrize("owner", ["", "   "])
async def test_a_key_needs_a_non_empty_owner(pool: Pool, owner: str) -> None:
    with pytest.raises(InvalidRequest, match="owner"):
        await keys.create_key(pool, owner)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM api_keys") == 0


def test_hash_key_is_sha256_of_the_key() -> None:
    assert keys.hash_key("gsk_abc") == hashlib.sha256(b"gsk_abc").digest()
    assert keys.hash_key("gsk_abc") != keys.hash_key("gsk_abd")
