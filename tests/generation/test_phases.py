"""The phase plan: four phases in order, sharing the progress bar without gaps or overlaps."""

from __future__ import annotations

import itertools

from service.generation.phases import PHASES, PHASES_END, PHASES_START, STARTED


def test_there_are_four_phases_in_order() -> None:
    assert [phase.stage for phase in PHASES] == ["core", "models", "api", "tests"]
    assert [phase.number for phase in PHASES] == [1, 2, 3, 4]


def test_every_phase_has_a_title_and_a_goal() -> None:
    assert [phase.title for phase in PHASES] == ["Core infrastructure", "Models", "API", "Tests"]
    assert all(phase.goal.strip() for phase in PHASES)
    assert len({phase.goal for phase in PHASES}) == len(PHASES)


def test_spans_are_increasing_and_contiguous() -> None:
    spans = [phase.span for phase in PHASES]

    for start, end in spans:
        assert start < end
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert end == next_start


def test_spans_cover_the_phase_share_of_the_bar() -> None:
    spans = [phase.span for phase in PHASES]

    assert spans[0][0] == PHASES_START
    assert spans[-1][1] == PHASES_END


def test_spans_lie_after_started_and_end_before_done() -> None:
    assert 0 < STARTED < PHASES_START < PHASES_END < 1
    for phase in PHASES:
        start, end = phase.span
        assert STARTED < start < end <= PHASES_END < 1


def test_spans_are_of_equal_width() -> None:
    widths = [round(end - start, 4) for start, end in (phase.span for phase in PHASES)]

    assert len(set(widths)) == 1
