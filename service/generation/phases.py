"""The phase plan: what each phase produces, in order, and its share of the progress bar."""

from __future__ import annotations

from dataclasses import dataclass

# The bar: 0 queued, STARTED when a worker begins, the phases share PHASES_START..PHASES_END,
# 1.0 only with generation.succeeded.
STARTED = 0.02
PHASES_START = 0.05
PHASES_END = 0.97


@dataclass(frozen=True, slots=True)
class Phase:
    stage: str
    title: str
    number: int
    goal: str

    @property
    def span(self) -> tuple[float, float]:
        width = (PHASES_END - PHASES_START) / len(PHASES)
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
