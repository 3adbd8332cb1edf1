"""The phase plan: four building phases in order, then verify and repair rounds, sharing the
progress bar without gaps or overlaps."""

from __future__ import annotations

import itertools

import pytest

from service.generation.phases import (
    BUILD_END,
    PHASES,
    PHASES_END,
    PHASES_START,
    STARTED,
    repair_phase,
    verify_phase,
)


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
    assert spans[-1][1] == BUILD_END < PHASES_END


def test_spans_lie_after_started_and_end_before_done() -> None:
    assert 0 < STARTED < PHASES_START < PHASES_END < 1
    for phase in PHASES:
        start, end = phase.span
        assert STARTED < start < end <= PHASES_END < 1


def test_spans_are_of_equal_width() -> None:
    widths = [round(end - start, 4) for start, end in (phase.span for phase in PHASES)]

    assert len(set(widths)) == 1


@pytest.mark.parametrize("repairs_max", [0, 1, 2, 5])
def test_verify_and_repair_rounds_alternate_over_the_rest_of_the_bar(repairs_max: int) -> None:
    rounds = [verify_phase(1, repairs_max)]
    for round_ in range(1, repairs_max + 1):
        rounds += [repair_phase(round_, repairs_max), verify_phase(round_ + 1, repairs_max)]
    spans = [phase.span for phase in rounds]

    assert [phase.stage for phase in rounds[:3]] == ["verify", "repair", "verify"][: len(rounds)]
    assert spans[0][0] == BUILD_END
    assert spans[-1][1] == PHASES_END
    for start, end in spans:
        assert start < end
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert end == next_start


def test_a_repair_is_numbered_with_the_verify_it_answers() -> None:
    assert (verify_phase(2, 2).number, verify_phase(2, 2).round) == (5, 2)
    assert (repair_phase(1, 2).stage, repair_phase(1, 2).round) == ("repair", 1)
