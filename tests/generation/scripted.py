"""Fakes of genstream's own seams for driving the generator without a model or a log: a
provider that answers from a script, an emitter that records, a checker that reports what a
test says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from service.events import CheckStep, NewEvent, NewFile
from service.generation.emitter import RunCancelled
from service.generation.parsing import render_block
from service.generation.providers import Prompt, Retrying, Usage
from service.verify.checks import CheckResult, Counts

Chunk = str | Retrying | asyncio.Event  # an Event: wait for it (a model that thinks)
Step = Sequence[Chunk] | Exception | tuple[Sequence[Chunk], Exception]


@dataclass
class ScriptedProvider:
    """Answers each call with the next step: chunks, an error before output, or chunks then
    an error (a stream that broke mid-answer). A chunk may be a Retrying note, or an
    asyncio.Event the stream waits for before going on."""

    steps: list[Step]
    name: str = "scripted"
    model: str = "script-1"
    repairs: bool = True
    prompts: list[Prompt] = field(default_factory=list)

    async def stream(self, prompt: Prompt) -> AsyncIterator[str | Usage | Retrying]:
        self.prompts.append(prompt)
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        chunks, error = step if isinstance(step, tuple) else (step, None)
        for chunk in chunks:
            if isinstance(chunk, asyncio.Event):
                await chunk.wait()
            else:
                yield chunk
        if error is not None:
            raise error
        text = "".join(chunk for chunk in chunks if isinstance(chunk, str))
        yield Usage(prompt_tokens=100, output_tokens=len(text) // 4)


@dataclass
class RecordingEmitter:
    events: list[NewEvent] = field(default_factory=list)
    batches: list[tuple[list[NewEvent], list[NewFile]]] = field(default_factory=list)
    cancel_after: int | None = None

    async def emit(self, *events: NewEvent, files: Sequence[NewFile] = ()) -> None:
        self.events.extend(events)
        self.batches.append((list(events), list(files)))
        if self.cancel_after is not None and len(self.events) >= self.cancel_after:
            raise RunCancelled


def answer(*files: NewFile) -> list[str]:
    """An answer cut into small chunks, as a model streams it."""
    text = "Sure, here are the files.\n" + "".join(render_block(f) for f in files)
    return [text[i : i + 7] for i in range(0, len(text), 7)]


@dataclass
class ScriptedChecker:
    """Answers each verify round with the next list of results (it stops, as the real one
    does, after the first that failed), and records the files it was shown."""

    rounds: list[list[CheckResult]]
    seen: list[dict[str, str]] = field(default_factory=list)

    async def __call__(
        self, files: Mapping[str, str], steps: Sequence[CheckStep]
    ) -> AsyncIterator[CheckResult]:
        self.seen.append(dict(files))
        for result in self.rounds.pop(0):
            assert result.step in steps, f"{result.step} is not a step of {steps}"
            yield result
            if not result.ok:
                return


def passed(step: CheckStep, count: int = 3) -> CheckResult:
    return CheckResult(step, True, f"{step}: {count} pass", Counts(passed=count), (), 40, "")


def failed(step: CheckStep, reason: str, failing: tuple[str, ...], output: str) -> CheckResult:
    return CheckResult(step, False, reason, Counts(passed=1, failed=1), failing, 40, output)
