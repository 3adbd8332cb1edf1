"""The phase plan: what each phase produces, in order, and its share of the progress bar.

Four phases build the project (PHASES_START..BUILD_END); verification takes the rest of the
bar (BUILD_END..PHASES_END), shared by its rounds: verify, then for each repair a repair and a
verify. Every round's span is fixed in advance from the number of repairs allowed, so the bar
never moves back, whether a round passes at once or after the last repair.
"""

from __future__ import annotations

from dataclasses import dataclass

# The bar: 0 queued, STARTED when a worker begins, the phases share PHASES_START..PHASES_END,
# 1.0 only with generation.succeeded.
STARTED = 0.02
PHASES_START = 0.05
BUILD_END = 0.85
PHASES_END = 0.97
VERIFY_NUMBER = 5  # verify (and its repairs) come after the four building phases


@dataclass(frozen=True, slots=True)
class Phase:
    stage: str
    title: str
    number: int
    goal: str

    round: int | None = None  # verify and repair: the verification round
    share: tuple[float, float] | None = None  # verify and repair: their span, set by the plan

    @property
    def span(self) -> tuple[float, float]:
        if self.share is not None:
            return self.share
        width = (BUILD_END - PHASES_START) / len(PHASES)
        start = PHASES_START + width * (self.number - 1)
        return round(start, 4), round(start + width, 4)


PHASES: tuple[Phase, ...] = (
    Phase(
        "core",
        "Core infrastructure",
        1,
        "the project's infrastructure: pyproject.toml, app/__init__.py, app/settings.py "
        "(settings from environment variables), app/database.py (the data store) and "
        "app/main.py (the application entry point that mounts one router per entity)",
    ),
    Phase(
        "models",
        "Models",
        2,
        "one module per entity under app/models/, with the entity's fields and types",
    ),
    Phase(
        "api",
        "API",
        3,
        "one module per entity under app/api/ with CRUD routes (list, create, get, replace, "
        "delete), refusing references to rows that do not exist",
    ),
    Phase(
        "tests",
        "Tests",
        4,
        "tests for the generated API under tests/, one module per entity, runnable with pytest",
    ),
)


def verify_phase(round_: int, repairs_max: int) -> Phase:
    """Round ``round_`` (1: before any repair) of checking the stored files."""
    return Phase(
        "verify",
        "Verify",
        VERIFY_NUMBER,
        "check that the project compiles, imports and passes its own tests",
        round=round_,
        share=_slot(2 * (round_ - 1), repairs_max),
    )


def repair_phase(round_: int, repairs_max: int) -> Phase:
    """Repair ``round_`` (1..repairs_max): the model corrects what verify round ``round_``
    found, then verify round ``round_ + 1`` checks it."""
    return Phase(
        "repair",
        "Repair",
        VERIFY_NUMBER,
        "correct the files so that the project passes the checks that failed",
        round=round_,
        share=_slot(2 * round_ - 1, repairs_max),
    )


def _slot(index: int, repairs_max: int) -> tuple[float, float]:
    """Slot ``index`` of the 2 * repairs_max + 1 that verify and repair rounds alternate in."""
    width = (PHASES_END - BUILD_END) / (2 * repairs_max + 1)
    start = BUILD_END + width * index
    return round(start, 4), round(start + width, 4)
