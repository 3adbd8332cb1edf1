"""``replay``: a generation's stored events as lines, byte for byte what the stream sends."""

from __future__ import annotations

from uuid import uuid4

import pytest

from service.errors import Conflict, NotFound
from service.operations.replay import replay
from service.store.db import Pool
from service.store.reads import Reads
from tests.helpers import append, delta, finished_generation, new_generation, stored_json
from tests.replica import Standby, answered, more


async def test_replay_writes_each_stored_event_as_one_line(pool: Pool) -> None:
    generation_id = await finished_generation(pool)
    lines: list[str] = []

    written = await replay(pool, generation_id, lines.append)

    assert "".join(lines).splitlines() == await stored_json(pool, generation_id)
    assert written == 5


async def test_replay_after_n_starts_past_it_and_past_the_end_writes_nothing(pool: Pool) -> None:
    generation_id = await finished_generation(pool)
    expected = await stored_json(pool, generation_id)
    after_three: list[str] = []
    past_end: list[str] = []

    assert await replay(pool, generation_id, after_three.append, after=3) == 2
    assert await replay(pool, generation_id, past_end.append, after=99) == 0

    assert "".join(after_three).splitlines() == expected[3:]
    assert past_end == []


async def test_replay_at_the_recorded_pace_writes_the_same_lines_one_by_one(pool: Pool) -> None:
    generation_id = await finished_generation(pool)
    writes: list[str] = []

    await replay(pool, generation_id, writes.append, pace="recorded", speed=100.0)

    assert writes == [line + "\n" for line in await stored_json(pool, generation_id)]


async def test_replay_refuses_an_unknown_generation_and_pacing_a_running_one(pool: Pool) -> None:
    running = await new_generation(pool)
    await append(pool, running, delta(1))
    with pytest.raises(NotFound):
        await replay(pool, uuid4(), print)
    with pytest.raises(Conflict):
        await replay(pool, running, print, pace="recorded")
    live: list[str] = []
    assert await replay(pool, running, live.append) == 2  # live: what is stored so far


async def test_replay_off_a_paused_standby_writes_every_event_the_primary_has(
    pool: Pool, replica_pool: Pool, standby: Standby
) -> None:
    generation_id = await new_generation(pool)
    await standby.caught_up()
    reads = Reads(pool, replica_pool, wait_s=0.05)
    async with standby.paused():
        await append(pool, generation_id, *(delta(n) for n in range(5)))
        paused: list[str] = []
        before = answered()
        await replay(reads, generation_id, paused.append)
        fell_back = more(before)
    await standby.caught_up()
    resumed: list[str] = []
    before = answered()
    await replay(reads, generation_id, resumed.append)

    stored = [line + "\n" for line in await stored_json(pool, generation_id)]
    assert paused == resumed == ["".join(stored)]
    # The page from the primary; the empty one after it (nothing past the head) needs no wait.
    assert fell_back == {"primary": 1, "replica": 1}
    assert more(before) == {"replica": 2}
