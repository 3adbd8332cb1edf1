"""The Python client keeps each generation's chain as it follows it (``genstream_client/chain.py``):
the texts a real server sends chain from zeros, and an event altered or removed in the
database after it was stored stops the follow with "incomplete or altered"."""

from __future__ import annotations

import hashlib
import json

import pytest
from genstream_client import AsyncGenstream, ChainBroken, ProtocolError
from genstream_client.chain import ZERO, ChainKeeper, chain_of
from genstream_client.models import Event

from service.store.db import Pool
from tests.conftest import KeyFactory, RunningApp
from tests.helpers import finished_generation, stored_json


def test_the_chain_of_a_text_is_the_hash_of_the_previous_chain_and_the_text_without_it() -> None:
    body = '{"seq":1,"data":{"chain":"not this one"}}'
    raw = body[:-1] + ',"chain":"' + "ab" * 32 + '"}'

    assert chain_of(ZERO, raw) == hashlib.sha256(bytes(32) + body.encode()).hexdigest()


async def test_a_servers_events_chain_from_zeros_and_a_follow_checks_every_one(
    running: RunningApp, make_key: KeyFactory, pool: Pool
) -> None:
    key = await make_key("alice")
    generation_id = await finished_generation(pool)
    async with AsyncGenstream(running.base_url, key) as client:
        followed = [event async for event in client.follow(str(generation_id))]
        resumed = [event async for event in client.follow(str(generation_id), after=2)]

    texts = await stored_json(pool, generation_id)
    assert [event.raw for event in followed] == texts
    keeper = ChainKeeper()
    for event in followed:
        keeper.check(event)
    assert keeper.value == followed[-1].chain
    terminal = followed[-1].data
    assert (terminal["count"], terminal["chain_hash"]) == (len(texts), followed[-2].chain)
    assert [event.seq for event in resumed] == list(range(3, len(texts) + 1))


@pytest.mark.parametrize("column", ["message", "payload", "created_at"])
async def test_a_follow_of_a_run_altered_in_the_database_says_incomplete_or_altered(
    running: RunningApp, make_key: KeyFactory, pool: Pool, column: str
) -> None:
    key = await make_key("alice")
    generation_id = await finished_generation(pool)
    change = {
        "message": "message = 'forged'",
        "payload": """payload = '{"text": "something else"}'""",
        "created_at": "created_at = created_at + interval '1 microsecond'",
    }[column]
    async with pool.acquire() as conn:
        await conn.execute(
            f"UPDATE generation_events SET {change} WHERE generation_id = $1 AND seq = 3",
            generation_id,
        )

    seen: list[Event] = []

    async def follow_all(client: AsyncGenstream) -> None:
        async for event in client.follow(str(generation_id)):
            seen.append(event)

    async with AsyncGenstream(running.base_url, key) as client:
        with pytest.raises(ChainBroken) as broken:
            await follow_all(client)
        # From after the altered event, the chain it left behind holds: it was stored intact.
        after = [event.seq async for event in client.follow(str(generation_id), after=3)]

    assert [event.seq for event in seen] == [1, 2]
    assert str(broken.value).startswith(
        f"incomplete or altered: generation {generation_id}'s seq 3 does not follow"
    )
    assert after == [4, 5]


async def test_a_follow_of_a_run_with_an_event_removed_says_the_log_cannot_fill_it(
    running: RunningApp, make_key: KeyFactory, pool: Pool
) -> None:
    key = await make_key("alice")
    generation_id = await finished_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM generation_events WHERE generation_id = $1 AND seq = 3", generation_id
        )

    async with AsyncGenstream(running.base_url, key) as client:
        with pytest.raises(ProtocolError, match="cannot fill seq 3"):
            _ = [event async for event in client.follow(str(generation_id))]


def test_a_terminal_event_that_counts_other_events_than_came_is_refused() -> None:
    def event(seq: int, previous: str, data: dict[str, object], kind: str) -> Event:
        body = json.dumps(
            {"generation_id": "g", "seq": seq, "type": kind, "status": "running", "data": data,
             "timestamp": "2026-11-30T00:00:00Z"},
            separators=(",", ":"),
        )  # fmt: skip
        chain = hashlib.sha256(bytes.fromhex(previous) + body.encode()).hexdigest()
        return Event.from_json(body[:-1] + f',"chain":"{chain}"}}')

    first = event(1, ZERO, {}, "generation.queued")
    assert first.chain is not None
    liar = event(2, first.chain, {"count": 7, "chain_hash": first.chain}, "generation.succeeded")
    keeper = ChainKeeper()
    keeper.check(first)

    with pytest.raises(ChainBroken, match="says 7 events"):
        keeper.check(liar)
