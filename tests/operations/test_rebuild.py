"""``rebuild``: the generation rows are what their events say, and can be made so again."""

from __future__ import annotations

from service.operations.rebuild import check, find_differences, find_log_defects, rebuild
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


async def test_a_seq_gap_the_rows_cannot_show_is_found_in_the_log_itself(pool: Pool) -> None:
    # The row still says what the last event says, so comparing rows found nothing.
    generation_id = await finished_generation(pool)
    async with pool.acquire() as conn:
        await conn.execute(
            "DELETE FROM generation_events WHERE generation_id = $1 AND seq = 3", generation_id
        )

    found = await check(pool)

    assert found.differences == []
    assert [(d.generation_id, d.seq, d.defect) for d in found.defects] == [
        (generation_id, 4, "gap")
    ]
    assert await find_log_defects(pool) == found.defects
    assert await rebuild(pool) == 0  # a row can be rebuilt; a log cannot
    assert await check(pool) == found
