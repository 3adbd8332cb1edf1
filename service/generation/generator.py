"""The phased generation: four phases, each one provider call whose files are saved at once,
then verification rounds, each followed, while the code fails and repairs are left, by a repair.

A phase's files are parsed from the complete answer and appended in ONE transaction together
with ``phase.completed``: a phase that breaks mid-answer and restarts can never leave files of
two attempts behind, and a crash mid-phase leaves no file of that phase at all. A repair is
such a phase: its files supersede the older versions of their paths.

Verification runs the checks of ``service/verify`` on the files as stored, in a sandbox, and
appends one ``check.completed`` per step as it finishes, then the round's ``phase.completed``
with its outcome. Where a run stands is read back from its log alone: the completed ``verify``
and ``repair`` phases say which round comes next, and the last verify's outcome is what a
repair corrects, so a run resumed in another process goes on with the same round.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from service.events import (
    CheckCompletedData,
    DeltaData,
    EventType,
    NewEvent,
    NewFile,
    PhaseCompletedData,
    PhaseStartedData,
    RetryingData,
    Verification,
    VerifyLevel,
    WaitingData,
)
from service.files import FileRefused
from service.generation import prompts
from service.generation.deltas import DeltaBuffer
from service.generation.emitter import Emitter, Generate, Job
from service.generation.parsing import MalformedAnswer, parse_answer
from service.generation.phases import PHASES, Phase, repair_phase, verify_phase
from service.generation.providers import (
    Prompt,
    Provider,
    ProviderError,
    Retrying,
    StreamBroken,
    Usage,
)
from service.generation.providers.registry import build_provider
from service.generation.silences import Silence, watched
from service.generation.verification import (
    LEVEL_STEPS,
    Checker,
    check_data,
    not_verified,
    round_outcome,
    sandbox_checker,
)
from service.observe import metrics, traces
from service.settings import Settings
from service.spec import Spec
from service.verify.limits import Limits
from service.verify.sandbox import SandboxUnavailable

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
        repairs_max=settings.repair_attempts,
        waiting_s=settings.llm_waiting_s,
    )
    checker = sandbox_checker(Limits.from_settings(settings))

    async def generate(job: Job, emitter: Emitter) -> Verification:
        provider = build_provider(job.provider, job.model, settings)
        try:
            return await PhasedGenerator(provider, emitter, tuning, checker=checker).run(
                Spec.model_validate(job.spec),
                completed=job.completed_stages,
                files=job.files,
                progress=job.progress,
                verify=job.verify,
                verified=job.verification,
            )
        finally:
            if (close := getattr(provider, "aclose", None)) is not None:
                await close()

    return generate


class GenerationFailed(Exception):
    """The run cannot go on; the message is shown to the user as the failure's reason, and
    ``verification`` (when the code was checked) goes with it on ``generation.failed``."""

    def __init__(self, message: str, *, verification: Verification | None = None) -> None:
        super().__init__(message)
        self.verification = verification


@dataclass(frozen=True, slots=True)
class Tuning:
    flush_s: float = 0.1
    flush_bytes: int = 2048
    restarts_max: int = 2
    repairs_max: int = 2
    waiting_s: float = 10.0


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
        *,
        checker: Checker | None = None,
    ) -> None:
        self._provider = provider
        self._emitter = emitter
        self._tuning = tuning
        self._clock = clock
        self._checker = checker
        self._progress = 0.0
        self._of = len(PHASES)
        # Rounds share the bar by the repairs this run may make: none with a template provider.
        self._repairs_max = tuning.repairs_max if provider.repairs else 0

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
        verify: VerifyLevel = "off",
        verified: Verification | None = None,
    ) -> Verification:
        """Run every phase not in ``completed``, seeing ``files`` (earlier output) as context,
        then verify to ``verify``'s level, repairing while allowed. ``verified`` is the last
        completed verify round's outcome, if one is in ``completed``.

        Returns the verification of the accepted code; raises GenerationFailed when the code
        does not pass.
        """
        known = dict(files or {})
        self._advance(progress)
        if verify != "off":
            self._of = len(PHASES) + 1
        for phase in PHASES:
            if phase.stage in completed:
                continue
            prompt = prompts.phase_prompt(spec, phase, known)
            for file in await self._phase(phase, prompt):
                known[file.path] = file.content
        if verify == "off":
            return not_verified()
        return await self._verification(spec, known, verify, completed, verified)

    async def _verification(
        self,
        spec: Spec,
        files: dict[str, str],
        level: VerifyLevel,
        completed: Sequence[str],
        last: Verification | None,
    ) -> Verification:
        """Verify rounds and repairs, from where the log says the run stands."""
        verified, repaired = completed.count("verify"), completed.count("repair")
        while True:
            if last is None or verified == repaired:
                last = await self._verify(files, level, verified + 1, repaired)
                verified += 1
            if last["ok"]:
                return last
            if repaired >= self._repairs_max:
                after = f" (after {_count(repaired, 'repair')})" if repaired else ""
                raise GenerationFailed(
                    f"the generated code did not pass verification{after}: {last['summary']}",
                    verification=last,
                )
            repaired += 1
            prompt = prompts.repair_code_prompt(spec, files, last, round_=repaired)
            for file in await self._phase(repair_phase(repaired, self._repairs_max), prompt):
                files[file.path] = file.content

    async def _verify(
        self, files: Mapping[str, str], level: VerifyLevel, round_: int, repairs: int
    ) -> Verification:
        """One verify round over ``files``: a check.completed per step, then phase.completed."""
        if self._checker is None:
            raise GenerationFailed("verification is not available to this generator")
        phase = verify_phase(round_, self._repairs_max)
        with traces.span("phase", phase=phase.stage, round=round_):
            started = self._clock()
            await self._emit_started(phase, 1, "")
            steps = LEVEL_STEPS[level]
            start, end = phase.span
            done: list[CheckCompletedData] = []
            try:
                async for result in self._checker(files, steps):
                    done.append(check_data(result, round_))
                    progress = start + (end - start) * len(done) / (len(steps) + 1)
                    await self._emitter.emit(
                        NewEvent(
                            EventType.CHECK_COMPLETED,
                            phase.stage,
                            self._advance(progress),
                            f"{result.step.capitalize()}: {result.reason}",
                            done[-1],
                        )
                    )
            except SandboxUnavailable as exc:
                raise GenerationFailed(
                    f"the code could not be verified on this server: {exc} (or create the "
                    'generation with "verify": "off")'
                ) from exc
            except FileRefused as exc:
                raise GenerationFailed(f"the code could not be verified: {exc}") from exc
            verification = round_outcome(level, done, round_, repairs)
            outcome = "passed" if verification["ok"] else "failed"
            data = self._completed_data(phase, 0, 1, 0, 0, started)
            data["verification"] = verification
            await self._emitter.emit(
                NewEvent(
                    EventType.PHASE_COMPLETED,
                    phase.stage,
                    self._advance(end),
                    f"Verify {outcome}: {verification['summary']}",
                    data,
                )
            )
        return verification

    async def _phase(self, phase: Phase, prompt: Prompt) -> tuple[NewFile, ...]:
        with traces.span("phase", phase=phase.stage):
            return await self._phase_traced(phase, prompt)

    async def _phase_traced(self, phase: Phase, prompt: Prompt) -> tuple[NewFile, ...]:
        started = self._clock()
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
        message = f"Phase {phase.number} of {self._of}: {phase.title}"
        if phase.stage == "repair":
            message = f"Repair {phase.round} of {self._repairs_max}"
        elif phase.round is not None and phase.round > 1:
            message = f"{message} (round {phase.round}, after repair {phase.round - 1})"
        if note:
            message = f"{message} (attempt {attempt}: {note})"
        data = PhaseStartedData(
            phase=phase.stage,
            number=phase.number,
            of=self._of,
            attempt=attempt,
            provider=self._provider.name,
            model=self._provider.model,
        )
        if note:
            data["reason"] = note
        if phase.round is not None:
            data["round"] = phase.round
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

        async def note(kind: EventType, message: str, data: RetryingData | WaitingData) -> None:
            await self._emitter.emit(NewEvent(kind, phase.stage, self._progress, message, data))

        label = self._provider.name.capitalize()
        watching = watched(self._provider.stream(prompt), self._tuning.waiting_s)
        async with contextlib.aclosing(watching) as items:
            async for item in items:
                if isinstance(item, Usage):
                    usage = item
                    continue
                if isinstance(item, Retrying):
                    await note(
                        EventType.LLM_RETRYING,
                        f"{label} did not answer: retry {item.number} of {item.of - 1} in "
                        f"{item.wait_s:g} s ({item.reason})",
                        RetryingData(
                            phase=phase.stage,
                            attempt=attempt,
                            request=item.number,
                            of=item.of,
                            wait_s=item.wait_s,
                            reason=item.reason,
                        ),
                    )
                    continue
                if isinstance(item, Silence):
                    await note(
                        EventType.LLM_WAITING,
                        f"Waiting for {label}: nothing for {item.waited_s:g} s",
                        WaitingData(phase=phase.stage, attempt=attempt, waited_s=item.waited_s),
                    )
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
                f"{phase.title} done: {_count(len(files), 'file')}",
                self._completed_data(
                    phase, len(files), attempts, prompt_tokens, output_tokens, started
                ),
            )
        )
        await self._emitter.emit(*events, files=files)

    def _completed_data(
        self,
        phase: Phase,
        files: int,
        attempts: int,
        prompt_tokens: int,
        output_tokens: int,
        started: float,
    ) -> PhaseCompletedData:
        data = PhaseCompletedData(
            phase=phase.stage,
            files=files,
            attempts=attempts,
            prompt_tokens=prompt_tokens,
            output_tokens=output_tokens,
            duration_ms=round((self._clock() - started) * 1000),
            provider=self._provider.name,
            model=self._provider.model,
        )
        if phase.round is not None:
            data["round"] = phase.round
        return data


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
