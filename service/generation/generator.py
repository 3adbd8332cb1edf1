"""The phased generation: four phases, each one provider call whose files are saved at once.

A phase's files are parsed from the complete answer and appended in ONE transaction together
with ``phase.completed``: a phase that breaks mid-answer and restarts can never leave files of
two attempts behind, and a crash mid-phase leaves no file of that phase at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from service.events import (
    DeltaData,
    EventType,
    NewEvent,
    NewFile,
    PhaseCompletedData,
    PhaseStartedData,
)
from service.generation import prompts
from service.generation.deltas import DeltaBuffer
from service.generation.emitter import Emitter, Generate, Job
from service.generation.parsing import MalformedAnswer, parse_answer
from service.generation.phases import PHASES, Phase
from service.generation.providers import Prompt, Provider, ProviderError, StreamBroken, Usage
from service.generation.providers.registry import build_provider
from service.observe import metrics, traces
from service.settings import Settings
from service.spec import Spec

# Progress while text streams approaches 80% of the phase's span as the answer grows; the
# remaining 20% is filled as files are saved. The curve only rises, whatever the length.
STREAM_SHARE = 0.8
EXPECTED_CHARS = 6_000


def make_generate(settings: Settings) -> Generate:
    """The worker's ``generate``: the generation's provider, driven through the phases."""
    tuning = Tuning(
        flush_s=settings.delta_flush_s,
        flush_bytes=settings.delta_flush_bytes,
        restarts_max=settings.phase_restarts_max,
    )

    async def generate(job: Job, emitter: Emitter) -> None:
        provider = build_provider(job.provider, job.model, settings)
        try:
            await PhasedGenerator(provider, emitter, tuning).run(
                Spec.model_validate(job.spec),
                completed=job.completed_stages,
                files=job.files,
                progress=job.progress,
            )
        finally:
            if (close := getattr(provider, "aclose", None)) is not None:
                await close()

    return generate


class GenerationFailed(Exception):
    """The run cannot go on; the message is shown to the user as the failure's reason."""


@dataclass(frozen=True, slots=True)
class Tuning:
    flush_s: float = 0.1
    flush_bytes: int = 2048
    restarts_max: int = 2


@dataclass(slots=True)
class _Answer:
    text: str
    usage: Usage


class PhasedGenerator:
    def __init__(
        self,
        provider: Provider,
        emitter: Emitter,
        tuning: Tuning = Tuning(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._emitter = emitter
        self._tuning = tuning
        self._clock = clock
        self._progress = 0.0

    def _advance(self, progress: float) -> float:
        """Progress never moves back, whatever restarts or estimates do."""
        self._progress = max(self._progress, round(min(progress, 1.0), 4))
        return self._progress

    async def run(
        self,
        spec: Spec,
        *,
        completed: Sequence[str] = (),
        files: Mapping[str, str] | None = None,
        progress: float = 0.0,
    ) -> None:
        """Run every phase not in ``completed``, seeing ``files`` (earlier output) as context."""
        known = dict(files or {})
        self._advance(progress)
        for phase in PHASES:
            if phase.stage in completed:
                continue
            for file in await self._phase(spec, phase, known):
                known[file.path] = file.content

    async def _phase(self, spec: Spec, phase: Phase, files: dict[str, str]) -> tuple[NewFile, ...]:
        with traces.span("phase", phase=phase.stage):
            return await self._phase_traced(spec, phase, files)

    async def _phase_traced(
        self, spec: Spec, phase: Phase, files: dict[str, str]
    ) -> tuple[NewFile, ...]:
        started = self._clock()
        prompt = prompts.phase_prompt(spec, phase, files)
        prompt_tokens = output_tokens = 0
        attempt, note, repaired = 1, "", False
        while True:
            await self._emit_started(phase, attempt, note)
            try:
                answer = await self._stream(phase, prompt, attempt)
            except StreamBroken as exc:
                if attempt > self._tuning.restarts_max:
                    raise GenerationFailed(
                        f"{phase.title}: the model's answer broke off {attempt} times ({exc})"
                    ) from exc
                attempt += 1
                note = f"the model's answer broke off ({exc}); starting the phase again"
                continue
            except ProviderError as exc:
                raise GenerationFailed(f"{phase.title}: {exc}") from exc
            prompt_tokens += answer.usage.prompt_tokens
            output_tokens += answer.usage.output_tokens
            try:
                parsed = parse_answer(answer.text)
            except MalformedAnswer as problem:
                if repaired:
                    raise GenerationFailed(
                        f"{phase.title}: the model's answer was malformed, even after a repair "
                        f"request: {problem}"
                    ) from problem
                attempt, repaired = attempt + 1, True
                note = f"the answer was malformed ({problem}); asking the model to repair it"
                prompt = prompts.repair_prompt(prompt, answer.text, str(problem))
                continue
            break
        await self._save(phase, parsed.files, attempt, prompt_tokens, output_tokens, started)
        return parsed.files

    async def _emit_started(self, phase: Phase, attempt: int, note: str) -> None:
        start, _ = phase.span
        message = f"Phase {phase.number} of {len(PHASES)}: {phase.title}"
        if note:
            message = f"{message} (attempt {attempt}: {note})"
        data = PhaseStartedData(
            phase=phase.stage,
            number=phase.number,
            of=len(PHASES),
            attempt=attempt,
            provider=self._provider.name,
            model=self._provider.model,
        )
        if note:
            data["reason"] = note
        await self._emitter.emit(
            NewEvent(EventType.PHASE_STARTED, phase.stage, self._advance(start), message, data)
        )

    async def _stream(self, phase: Phase, prompt: Prompt, attempt: int) -> _Answer:
        """One model call, counted by outcome, with its tokens and time to first text."""
        provider, model = self._provider.name, self._provider.model or ""
        with traces.span("model.call", provider=provider, model=model, attempt=attempt):
            try:
                answer = await self._answer(phase, prompt, attempt)
            except StreamBroken:
                metrics.MODEL_CALLS.labels(provider, model, "broken").inc()
                raise
            except ProviderError:
                metrics.MODEL_CALLS.labels(provider, model, "error").inc()
                raise
        metrics.MODEL_CALLS.labels(provider, model, "ok").inc()
        metrics.MODEL_TOKENS.labels(provider, model, "in").inc(answer.usage.prompt_tokens)
        metrics.MODEL_TOKENS.labels(provider, model, "out").inc(answer.usage.output_tokens)
        return answer

    async def _answer(self, phase: Phase, prompt: Prompt, attempt: int) -> _Answer:
        start, end = phase.span
        asked = time.monotonic()
        buffer = DeltaBuffer(
            flush_s=self._tuning.flush_s, flush_bytes=self._tuning.flush_bytes, clock=self._clock
        )
        parts: list[str] = []
        received = 0
        usage = Usage()

        async def emit(text: str) -> None:
            share = STREAM_SHARE * (1 - math.exp(-received / EXPECTED_CHARS))
            await self._emitter.emit(
                NewEvent(
                    EventType.LLM_DELTA,
                    phase.stage,
                    self._advance(start + (end - start) * share),
                    f"Writing {phase.title.lower()}",
                    DeltaData(phase=phase.stage, attempt=attempt, text=text),
                )
            )

        async for item in self._provider.stream(prompt):
            if isinstance(item, Usage):
                usage = item
                continue
            if not parts:
                metrics.MODEL_FIRST_TOKEN.labels(
                    self._provider.name, self._provider.model or ""
                ).observe(time.monotonic() - asked)
            parts.append(item)
            received += len(item)
            if (ready := buffer.add(item)) is not None:
                await emit(ready)
        if (rest := buffer.drain()) is not None:
            await emit(rest)
        return _Answer("".join(parts), usage)

    async def _save(
        self,
        phase: Phase,
        files: tuple[NewFile, ...],
        attempts: int,
        prompt_tokens: int,
        output_tokens: int,
        started: float,
    ) -> None:
        start, end = phase.span
        floor = max(self._progress, start + (end - start) * STREAM_SHARE)
        events = [
            file.saved(phase.stage, self._advance(floor + (end - floor) * (i + 1) / len(files)))
            for i, file in enumerate(files)
        ]
        events.append(
            NewEvent(
                EventType.PHASE_COMPLETED,
                phase.stage,
                self._advance(end),
                f"{phase.title} done: {len(files)} files",
                PhaseCompletedData(
                    phase=phase.stage,
                    files=len(files),
                    attempts=attempts,
                    prompt_tokens=prompt_tokens,
                    output_tokens=output_tokens,
                    duration_ms=round((self._clock() - started) * 1000),
                    provider=self._provider.name,
                    model=self._provider.model,
                ),
            )
        )
        await self._emitter.emit(*events, files=files)
