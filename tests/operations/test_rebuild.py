"""``rebuild``: the generation rows are what their events say, and can be made so again."""

from __future__ import annotations

from service.operations.rebuild import find_differences, rebuild
from service.store.db import Pool
from tests.helpers import finished_generation


async def test_a_clean_log_has_no_differences_and_rebuild_changes_nothing(pool: Pool) -> None:
    await finished_generation(pool)
    assert await find_differences(pool) == []
    assert await rebuild(pool) == 0


async def test_a_row_changed_by_hand_is_found_and_rebuilt_from_its_events(pool: Pool) -> None:
    generation_id = await finished_generation(pool)
    untouched = await finished_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE generations SET stage = 'nowhere', progress = 0.5 WHERE id = $1",
            generation_id,
        )

    found = await find_differences(pool)

    assert {(d.generation_id, d.column) for d in found} == {
        (generation_id, "stage"),
        (generation_id, "progress"),
    }
    assert untouched not in {d.generation_id for d in found}
    assert await rebuild(pool) == 1
    assert await find_differences(pool) == []
