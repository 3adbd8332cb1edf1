"""The offline provider: deterministic templates instead of a model, streamed like one.

``render_phase`` writes the files of one phase of a runnable Litestar + pydantic project for a
spec (see ``templates.py`` for what it generates and the naming rules); ``OfflineProvider``
streams them in the file-block format of ``generation/parsing.py``, in small chunks with an
optional pause before each, then reports a ``Usage`` estimated at four characters a token.
No network, no key, and the same spec always gives byte-identical files.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from service.events import NewFile
from service.generation.parsing import CLOSE, OPEN, language_of, render_block
from service.generation.providers import Prompt, Usage
from service.generation.providers import templates as t
from service.spec import Spec

STAGES = ("core", "models", "api", "tests")

_Render = Callable[[t.Plan], list[tuple[str, str]]]


def _core(p: t.Plan) -> list[tuple[str, str]]:
    return [
        ("pyproject.toml", t.pyproject(p)),
        ("README.md", t.readme(p)),
        ("app/__init__.py", t.app_init(p)),
        ("app/settings.py", t.settings(p)),
        ("app/database.py", t.database(p)),
        ("app/main.py", t.main(p)),
    ]


def _models(p: t.Plan) -> list[tuple[str, str]]:
    return [("app/models/__init__.py", t.models_init(p))] + [
        (f"app/models/{e.module}.py", t.model(p, e)) for e in p.entities
    ]


def _api(p: t.Plan) -> list[tuple[str, str]]:
    return [("app/api/__init__.py", t.api_init(p))] + [
        (f"app/api/{e.module}.py", t.api(p, e)) for e in p.entities
    ]


def _tests(p: t.Plan) -> list[tuple[str, str]]:
    return [
        ("tests/__init__.py", t.tests_init(p)),
        ("tests/conftest.py", t.conftest(p)),
        ("tests/factories.py", t.factories(p)),
        ("tests/test_app.py", t.app_tests(p)),
    ] + [(f"tests/test_{e.module}.py", t.entity_tests(p, e)) for e in p.entities]


_PHASES: dict[str, _Render] = {"core": _core, "models": _models, "api": _api, "tests": _tests}


def render_phase(spec: Spec, stage: str) -> list[NewFile]:
    """The files of one phase (``core``, ``models``, ``api`` or ``tests``) for this spec."""
    render = _PHASES.get(stage)
    if render is None:
        raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    files = []
    for path, content in render(t.plan(spec)):
        if OPEN in content or CLOSE in content:  # the templates escape user text; never expected
            raise ValueError(f"{path} would contain a file-block marker")
        files.append(NewFile(path, content, language_of(path)))
    return files


class OfflineProvider:
    """A Provider that answers every phase from templates, streamed at a chosen cadence."""

    name = "offline"
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
