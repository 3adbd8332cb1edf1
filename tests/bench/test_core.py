"""``bench/core.py``: the arithmetic every benchmark table rests on."""

from __future__ import annotations

import math

import pytest

from bench.core import bucket_quantile

BOUNDS = (0.001, 0.002, 0.005, math.inf)


def cumulative(*counts: float) -> list[tuple[float, float]]:
    """Buckets as a histogram exposes them: counts per bucket, summed upwards."""
    total, buckets = 0.0, []
    for bound, count in zip(BOUNDS, counts, strict=True):
        total += count
        buckets.append((bound, total))
    return buckets


def test_a_quantile_is_interpolated_within_its_bucket_of_what_came_between_the_scrapes() -> None:
    before = cumulative(50, 0, 0, 0)  # counted before the measurement: not part of it
    after = cumulative(50 + 10, 80, 10, 0)
    assert bucket_quantile(before, after, 0.05) == pytest.approx(0.0005)  # 5 of 10 in (0, 1]
    assert bucket_quantile(before, after, 0.5) == pytest.approx(0.001 + 0.001 * 40 / 80)
    assert bucket_quantile(before, after, 0.99) == pytest.approx(0.002 + 0.003 * 9 / 10)


def test_past_the_last_finite_bound_the_quantile_is_that_bound() -> None:
    after = cumulative(0, 0, 1, 99)
    assert bucket_quantile(cumulative(0, 0, 0, 0), after, 0.99) == 0.005


def test_nothing_counted_between_the_scrapes_has_no_quantile() -> None:
    same = cumulative(3, 2, 1, 0)
    assert math.isnan(bucket_quantile(same, same, 0.5))
