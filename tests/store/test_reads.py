"""store/reads.py against a real hot standby (tests/replica.py): reads answered there while it
is caught up, by the primary once it lags past the bound, and never less than the primary has."""

from __future__ import annotations

import asyncio
import time

from service.store.db import Pool, create_pool
from service.store.reads import Reads
from tests.helpers import append, delta, new_generation
from tests.replica import Standby, answered, more

WAIT_S = 0.05


async def test_the_standby_is_a_hot_standby_of_the_tests_database(replica_pool: Pool) -> None:
    async with replica_pool.acquire() as conn:
        assert await conn.fetchval("SELECT pg_is_in_recovery()")
        assert await conn.fetchval("SELECT count(*) FROM generation_events") == 0


async def test_a_caught_up_standby_answers_a_page_at_once(
    pool: Pool, replica_pool: Pool, standby: Standby
) -> None:
    generation_id = await new_generation(pool)
    last = await append(pool, generation_id, *(delta(n) for n in range(5)))
    await standby.caught_up()
    before = answered()

    page = await Reads(pool, replica_pool, wait_s=WAIT_S).events_after(
        generation_id, 0, 100, expect=last
    )

    assert [event.seq for event in page] == list(range(1, last + 1))
    assert more(before) == {"replica": 1}


async def test_with_replay_paused_a_page_comes_from_the_primary_after_the_bound(
    pool: Pool, replica_pool: Pool, standby: Standby
) -> None:
    generation_id = await new_generation(pool)
    await standby.caught_up()
    reads = Reads(pool, replica_pool, wait_s=WAIT_S)
    async with standby.paused():
        last = await append(pool, generation_id, *(delta(n) for n in range(5)))
        before = answered()
        started = time.monotonic()
        page = await reads.events_after(generation_id, 0, 100, expect=last)
        took = time.monotonic() - started
        # What the standby has (seq 1) needs no wait and no primary, paused or not.
        old = await reads.events_after(generation_id, 0, 100, expect=1)

    assert [event.seq for event in page] == list(range(1, last + 1))
    assert [event.seq for event in old] == [1]
    assert more(before) == {"primary": 1, "replica": 1}
    assert WAIT_S * 0.8 <= took < WAIT_S + 1.0


async def test_a_page_limited_below_the_expected_seq_is_complete_when_full(
    pool: Pool, replica_pool: Pool, standby: Standby
) -> None:
    generation_id = await new_generation(pool)
    await append(pool, generation_id, *(delta(n) for n in range(5)))
    await standby.caught_up()
    before = answered()

    page = await Reads(pool, replica_pool, wait_s=WAIT_S).events_after(
        generation_id, 2, 2, expect=1_000
    )

    assert [event.seq for event in page] == [3, 4]
    assert more(before) == {"replica": 1}


async def test_a_standby_that_replays_within_the_bound_answers_after_waiting(
    pool: Pool, replica_pool: Pool, standby: Standby
) -> None:
    generation_id = await new_generation(pool)
    await standby.caught_up()
    reads = Reads(pool, replica_pool, wait_s=10.0)
    before = answered()
    async with standby.paused():
        last = await append(pool, generation_id, delta(1))
        reading = asyncio.create_task(reads.events_after(generation_id, 0, 100, expect=last))
        await asyncio.sleep(0.1)
        assert not reading.done(), "the read must wait for the standby, not return short"
    page = await asyncio.wait_for(reading, 5)

    assert [event.seq for event in page] == [1, 2]
    assert more(before) == {"replica_waited": 1}


async def test_caught_up_reads_the_standby_only_once_it_has_replayed_the_primary(
    pool: Pool, replica_pool: Pool, standby: Standby
) -> None:
    generation_id = await new_generation(pool)
    await standby.caught_up()
    reads = Reads(pool, replica_pool, wait_s=WAIT_S)
    async with standby.paused():
        await append(pool, generation_id, delta(1))
        async with reads.caught_up() as conn:
            paused_on_standby = await conn.fetchval("SELECT pg_is_in_recovery()")
            paused_count = await conn.fetchval("SELECT count(*) FROM generation_events")
    async with reads.caught_up() as conn:
        resumed_on_standby = await conn.fetchval("SELECT pg_is_in_recovery()")
        resumed_count = await conn.fetchval("SELECT count(*) FROM generation_events")

    assert (paused_on_standby, paused_count) == (False, 2)  # the primary, with both
    assert (resumed_on_standby, resumed_count) == (True, 2)


async def test_a_standby_that_cannot_answer_costs_a_read_nothing(
    pool: Pool, replica_url: str
) -> None:
    generation_id = await new_generation(pool)
    gone = await create_pool(replica_url, max_size=1)
    gone.terminate()  # every acquire now fails as a connection error would
    reads = Reads(pool, gone, wait_s=10.0)
    before = answered()

    started = time.monotonic()
    page = await reads.events_after(generation_id, 0, 100, expect=1)
    async with reads.caught_up() as conn:
        assert not await conn.fetchval("SELECT pg_is_in_recovery()")

    assert [event.seq for event in page] == [1]
    assert more(before) == {"primary": 2}
    assert time.monotonic() - started < 1.0, "no waiting on a standby that is away"


async def test_without_a_standby_everything_reads_the_primary(pool: Pool) -> None:
    generation_id = await new_generation(pool)
    reads = Reads(pool, wait_s=WAIT_S)
    before = answered()

    page = await reads.events_after(generation_id, 0, 100, expect=1)
    async with reads.caught_up() as conn:
        assert not await conn.fetchval("SELECT pg_is_in_recovery()")

    assert [event.seq for event in page] == [1]
    assert more(before) == {}


async def test_after_a_fallback_reads_ask_a_lagging_standby_once_without_waiting(
    pool: Pool, replica_pool: Pool, standby: Standby
) -> None:
    generation_id = await new_generation(pool)
    await standby.caught_up()
    reads = Reads(pool, replica_pool, wait_s=0.5)
    before = answered()
    async with standby.paused():
        last = await append(pool, generation_id, *(delta(n) for n in range(5)))
        took: list[float] = []
        for _ in range(3):
            started = time.monotonic()
            page = await reads.events_after(generation_id, 0, 100, expect=last)
            took.append(time.monotonic() - started)
            assert [event.seq for event in page] == list(range(1, last + 1))
    await standby.caught_up()
    page = await reads.events_after(generation_id, 0, 100, expect=last)

    assert took[0] >= 0.4, "the first read waits for the standby"
    assert max(took[1:]) < 0.25, "the next ones, within BEHIND_S, do not"
    assert [event.seq for event in page] == list(range(1, last + 1))
    assert more(before) == {"primary": 3, "replica": 1}, "a complete answer ends the spell"
