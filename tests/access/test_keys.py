from __future__ import annotations

import hashlib
import re
from uuid import uuid4

import pytest

from service.access import keys
from service.errors import InvalidRequest, NotFound, Unauthorized
from service.store.db import Pool, create_pool
from tests.helpers import new_generation

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


async def test_an_expired_key_is_refused(pool: Pool) -> None:
    key = await keys.create_key(pool, "alice", expires_in_s=3600)
    assert (await keys.authenticate(pool, key)).owner == "alice"
    async with pool.acquire() as conn:
        await conn.execute("UPDATE api_keys SET expires_at = clock_timestamp() - interval '1 s'")
    with pytest.raises(Unauthorized, match="expired"):
        await keys.authenticate(pool, key)


async def test_a_revoked_key_is_refused_at_once_through_every_pool(
    pool: Pool, database_url: str
) -> None:
    """Another pool stands for another process: nothing about a key is cached."""
    key = await keys.create_key(pool, "alice")
    generation_id = await new_generation(pool)
    other = await create_pool(database_url, min_size=1, max_size=1)
    try:
        found = await keys.authenticate(other, key)
        assert (await keys.live_key(other, found.key_id)).owner == "alice"
        caller, head = await keys.live_key_and_head(other, found.key_id, generation_id)
        assert (caller, head.last_seq) == (found, 1)
        assert await keys.revoke_key(pool, found.key_id) == "alice"
        with pytest.raises(Unauthorized):
            await keys.authenticate(other, key)
        with pytest.raises(Unauthorized, match="revoked or expired"):
            await keys.live_key(other, found.key_id)
        with pytest.raises(Unauthorized, match="revoked or expired"):
            await keys.live_key_and_head(other, found.key_id, generation_id)
        assert await keys.revoke_key(pool, found.key_id) == "alice"  # again: harmless
    finally:
        await other.close()
    with pytest.raises(NotFound):
        await keys.revoke_key(pool, uuid4())


async def test_a_key_carries_its_quotas_and_its_last_use(pool: Pool) -> None:
    key = await keys.create_key(
        pool, "alice", quotas=keys.Quotas(max_active_runs=3, runs_per_minute=0)
    )
    (listed,) = await keys.list_keys(pool)
    assert listed.last_used_at is None
    assert (listed.max_active_runs, listed.runs_per_minute, listed.max_streams) == (3, 0, None)

    found = await keys.authenticate(pool, key)
    await keys.authenticate(pool, key)

    assert (found.max_active_runs, found.runs_per_minute, found.max_streams) == (3, 0, None)
    (used,) = await keys.list_keys(pool)
    assert used.last_used_at is not None
    assert key[:10] == used.prefix
    assert key not in repr(used)


@pytest.mark.parametrize("lifetime", [0.0, -5.0])
async def test_a_key_lifetime_must_be_positive(pool: Pool, lifetime: float) -> None:
    with pytest.raises(InvalidRequest, match="lifetime"):
        await keys.create_key(pool, "alice", expires_in_s=lifetime)
