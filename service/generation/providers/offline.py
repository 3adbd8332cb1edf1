"""The offline provider: deterministic templates instead of a model, streamed like one.

``render_phase`` writes the files of one phase of a runnable Litestar + pydantic project for a
spec (see the ``templates`` package for what it generates and the naming rules); ``OfflineProvider``
streams them in the file-block format of ``generation/parsing.py``, in small chunks with an
optional pause before each, then reports a ``Usage`` estimated at four characters a token.
No network, no key, and the same spec always gives byte-identical files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from service.events import NewFile
from service.files import language_of
from service.generation.parsing import CLOSE, OPEN, render_block
from service.generation.providers import Prompt, Usage
from service.generation.providers.templates.api import api, api_init
from service.generation.providers.templates.app import app_init, database, main, settings
from service.generation.providers.templates.fixtures import conftest, factories, tests_init
from service.generation.providers.templates.models import model, models_init
from service.generation.providers.templates.plan import Plan, plan_project
from service.generation.providers.templates.project import pyproject, readme
from service.generation.providers.templates.suite import app_tests, entity_tests
from service.spec import Spec

STAGES = ("core", "models", "api", "tests")

_Render = Callable[[Plan], list[tuple[str, str]]]


def _core(plan: Plan) -> list[tuple[str, str]]:
    return [
        ("pyproject.toml", pyproject(plan)),
        ("README.md", readme(plan)),
        ("app/__init__.py", app_init(plan)),
        ("app/settings.py", settings(plan)),
        ("app/database.py", database(plan)),
        ("app/main.py", main(plan)),
    ]


def _models(plan: Plan) -> list[tuple[str, str]]:
    return [("app/models/__init__.py", models_init(plan))] + [
        (f"app/models/{entity.module}.py", model(plan, entity)) for entity in plan.entities
    ]


def _api(plan: Plan) -> list[tuple[str, str]]:
    return [("app/api/__init__.py", api_init(plan))] + [
        (f"app/api/{entity.module}.py", api(plan, entity)) for entity in plan.entities
    ]


def _tests(plan: Plan) -> list[tuple[str, str]]:
    return [
        ("tests/__init__.py", tests_init(plan)),
        ("tests/conftest.py", conftest(plan)),
        ("tests/factories.py", factories(plan)),
        ("tests/test_app.py", app_tests(plan)),
    ] + [(f"tests/test_{entity.module}.py", entity_tests(plan, entity)) for entity in plan.entities]


_PHASES: dict[str, _Render] = {"core": _core, "models": _models, "api": _api, "tests": _tests}


def render_phase(spec: Spec, stage: str) -> list[NewFile]:
    """The files of one phase (``core``, ``models``, ``api`` or ``tests``) for this spec."""
    render = _PHASES.get(stage)
    if render is None:
        raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    files = []
    for path, content in render(plan_project(spec)):
        if OPEN in content or CLOSE in content:  # the templates escape user text; never expected
            raise ValueError(f"{path} would contain a file-block marker")
        files.append(NewFile(path, content, language_of(path)))
    return files


class OfflineProvider:
    """A Provider that answers every phase from templates, streamed at a chosen cadence."""

    name = "offline"
    repairs = False
    model = "templates-v1"

    def __init__(self, *, delay_s: float = 0.0, chunk_chars: int = 64) -> None:
        if delay_s < 0:
            raise ValueError(f"delay_s must be >= 0, got {delay_s}")
        if chunk_chars < 1:
            raise ValueError(f"chunk_chars must be >= 1, got {chunk_chars}")
        self.delay_s = delay_s
        self.chunk_chars = chunk_chars

    async def stream(self, prompt: Prompt) -> AsyncIterator[str | Usage]:
        """The phase's files as file blocks, ``chunk_chars`` at a time, then one Usage."""
        text = "".join(render_block(file) for file in render_phase(prompt.spec, prompt.stage))
        for start in range(0, len(text), self.chunk_chars):
            await asyncio.sleep(self.delay_s)
            yield text[start : start + self.chunk_chars]
        yield Usage(
            prompt_tokens=len(prompt.system + prompt.user) // 4,
            output_tokens=len(text) // 4,
        )
