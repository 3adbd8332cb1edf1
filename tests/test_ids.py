"""service/ids.py: UUIDv7 generation ids, and the bounds partitions are made of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest

from service.ids import lowest_v7, new_generation_id, v7_at

DECEMBER = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_new_id_is_a_version_7_uuid_of_now() -> None:
    before = lowest_v7(datetime.now(UTC))
    made = new_generation_id()
    after = lowest_v7(datetime.now(UTC) + timedelta(milliseconds=2))
    assert (made.version, made.variant) == (7, "specified in RFC 4122")
    assert before <= made < after


def test_ids_sort_by_the_time_they_were_made() -> None:
    ids = [new_generation_id() for _ in range(1000)]
    assert ids == sorted(ids)


def test_the_lowest_id_of_an_instant_bounds_every_id_made_from_then() -> None:
    assert lowest_v7(DECEMBER) == UUID("01a22ee6-b000-7000-8000-000000000000")
    assert lowest_v7(DECEMBER) <= v7_at(DECEMBER) < lowest_v7(DECEMBER + timedelta(milliseconds=1))
    assert v7_at(DECEMBER - timedelta(milliseconds=1)) < lowest_v7(DECEMBER)
    assert (v7_at(DECEMBER).version, v7_at(DECEMBER).variant) == (7, "specified in RFC 4122")


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        lowest_v7(datetime(2026, 12, 1))
