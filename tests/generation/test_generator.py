"""The phased generator with a scripted provider (a fake of our own Provider protocol) and a
recording emitter; the end-to-end path through the real log is in test_runner.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

import pytest

from service.events import EventType, NewEvent, NewFile
from service.generation.emitter import RunCancelled
from service.generation.generator import GenerationFailed, PhasedGenerator, Tuning
from service.generation.phases import PHASES
from service.generation.providers import ProviderError, Retrying, StreamBroken
from service.spec import Spec
from tests.generation.scripted import RecordingEmitter, ScriptedProvider, Step, answer
from tests.helpers import SPEC


def phase_files(stage: str, n: int = 2) -> list[NewFile]:
    return [NewFile(f"{stage}/f{i}.py", f"# {stage} {i}\nx = {i}\n", "python") for i in range(n)]


def good_steps() -> list[Step]:
    return [answer(*phase_files(phase.stage)) for phase in PHASES]


SPEC_MODEL = Spec.model_validate(SPEC)


async def run(provider: ScriptedProvider, emitter: RecordingEmitter, **tuning: float) -> None:
    await PhasedGenerator(provider, emitter, Tuning(**tuning)).run(SPEC_MODEL)  # type: ignore[arg-type]


async def test_each_phase_emits_started_deltas_saved_files_and_completed_in_order() -> None:
    provider, emitter = ScriptedProvider(good_steps()), RecordingEmitter()
    await run(provider, emitter)
    stages = [phase.stage for phase in PHASES]
    started = [e for e in emitter.events if e.type is EventType.PHASE_STARTED]
    assert [e.stage for e in started] == stages
    for phase in PHASES:
        mine = [e for e in emitter.events if e.stage == phase.stage]
        kinds = [e.type for e in mine]
        assert kinds[0] is EventType.PHASE_STARTED
        assert kinds[-1] is EventType.PHASE_COMPLETED
        assert set(kinds[1:-3]) == {EventType.LLM_DELTA}
        assert kinds[-3:-1] == [EventType.FILE_SAVED, EventType.FILE_SAVED]
    assert [e.data["path"] for e in emitter.events if e.type is EventType.FILE_SAVED] == [
        f.path for phase in PHASES for f in phase_files(phase.stage)
    ]


async def test_progress_only_rises_and_stage_follows_the_phases() -> None:
    emitter = RecordingEmitter()
    await run(ScriptedProvider(good_steps()), emitter)
    progress = [e.progress for e in emitter.events]
    assert progress == sorted(progress)
    assert progress[0] > 0
    assert progress[-1] < 1.0
    order = [phase.stage for phase in PHASES]
    seen = [order.index(e.stage) for e in emitter.events]
    assert seen == sorted(seen)


async def test_files_of_a_phase_are_saved_in_one_batch_with_phase_completed() -> None:
    emitter = RecordingEmitter()
    await run(ScriptedProvider(good_steps()), emitter)
    saving = [(events, files) for events, files in emitter.batches if files]
    assert len(saving) == len(PHASES)
    for (events, files), phase in zip(saving, PHASES, strict=True):
        assert [e.type for e in events] == [EventType.FILE_SAVED] * 2 + [EventType.PHASE_COMPLETED]
        assert files == phase_files(phase.stage)
        saved = events[0].data
        assert saved["sha256"] == files[0].sha256
        assert saved["size"] == files[0].size


async def test_phase_completed_records_tokens_attempts_and_duration() -> None:
    emitter = RecordingEmitter()
    await run(ScriptedProvider(good_steps()), emitter)
    completed = [e for e in emitter.events if e.type is EventType.PHASE_COMPLETED]
    for event in completed:
        assert event.data["prompt_tokens"] == 100
        assert event.data["output_tokens"] > 0
        assert event.data["attempts"] == 1
        assert event.data["duration_ms"] >= 0
        assert (event.data["provider"], event.data["model"]) == ("scripted", "script-1")


async def test_deltas_are_coalesced_and_carry_the_whole_text() -> None:
    steps = good_steps()
    emitter = RecordingEmitter()
    await run(ScriptedProvider(list(steps)), emitter, flush_s=3600, flush_bytes=64)
    for phase, chunks in zip(PHASES, steps, strict=True):
        deltas = [
            e for e in emitter.events if e.type is EventType.LLM_DELTA and e.stage == phase.stage
        ]
        text = "".join(chunks)  # type: ignore[arg-type]
        assert "".join(e.data["text"] for e in deltas) == text
        assert len(deltas) <= len(text.encode()) // 64 + 1
        assert len(deltas) < len(chunks)  # type: ignore[arg-type]


async def test_a_stream_broken_mid_answer_restarts_the_phase_and_keeps_only_the_new_files() -> None:
    first_try = answer(NewFile("core/old.py", "old = 1\n", "python"))
    steps = good_steps()
    steps[0] = (first_try[:5], StreamBroken("connection reset"))
    steps.insert(1, answer(*phase_files("core")))
    emitter = RecordingEmitter()
    await run(ScriptedProvider(steps), emitter)
    core_started = [e for e in emitter.events if e.type is EventType.PHASE_STARTED][:2]
    assert [e.stage for e in core_started] == ["core", "core"]
    assert core_started[1].data["attempt"] == 2
    assert "connection reset" in core_started[1].data["reason"]
    assert "broke off" in core_started[1].message
    saved = [f.path for _, files in emitter.batches for f in files]
    assert "core/old.py" not in saved
    assert saved[:2] == [f.path for f in phase_files("core")]
    completed = next(e for e in emitter.events if e.type is EventType.PHASE_COMPLETED)
    assert completed.data["attempts"] == 2


async def test_a_phase_that_keeps_breaking_fails_the_generation_with_the_reason() -> None:
    broken: Step = (["<<<FILE a.py>>>\n"], StreamBroken("reset by peer"))
    provider = ScriptedProvider([broken, broken, broken])
    emitter = RecordingEmitter()
    with pytest.raises(GenerationFailed, match=r"Core infrastructure.*broke off 3 times.*reset"):
        await run(provider, emitter, restarts_max=2)
    assert not any(files for _, files in emitter.batches)


async def test_a_malformed_answer_gets_one_repair_request_then_succeeds() -> None:
    steps = good_steps()
    steps.insert(0, ["I think you should write a settings module."])
    provider, emitter = ScriptedProvider(steps), RecordingEmitter()
    await run(provider, emitter)
    repair = provider.prompts[1]
    assert "could not be used" in repair.user
    assert "I think you should write a settings module." in repair.user
    restarted = [e for e in emitter.events if e.type is EventType.PHASE_STARTED][1]
    assert restarted.stage == "core"
    assert "malformed" in restarted.message
    assert emitter.events[-1].type is EventType.PHASE_COMPLETED


async def test_a_second_malformed_answer_fails_with_a_clear_error() -> None:
    provider = ScriptedProvider([["no files here"], ["<<<FILE a.py>>>\nunterminated\n"]])
    with pytest.raises(GenerationFailed, match=r"malformed, even after a repair request"):
        await run(provider, RecordingEmitter())
    assert len(provider.prompts) == 2


async def test_a_provider_error_fails_the_generation_naming_the_phase() -> None:
    steps = good_steps()
    steps[1] = ProviderError("Gemini kept failing: 503 UNAVAILABLE (4 attempts)")
    emitter = RecordingEmitter()
    with pytest.raises(GenerationFailed, match=r"^Models: Gemini kept failing: 503"):
        await run(ScriptedProvider(steps), emitter)
    assert [e.stage for e in emitter.events if e.type is EventType.PHASE_COMPLETED] == ["core"]


async def test_each_phase_sees_the_files_of_the_earlier_phases() -> None:
    provider = ScriptedProvider(good_steps())
    await run(provider, RecordingEmitter())
    assert provider.prompts[0].files == {}
    assert set(provider.prompts[3].files) == {
        f.path for phase in PHASES[:3] for f in phase_files(phase.stage)
    }
    assert json.dumps(SPEC_MODEL.model_dump(mode="json", exclude_none=True), indent=2) in (
        provider.prompts[0].user
    )


async def test_a_cancel_mid_phase_stops_before_any_file_of_that_phase() -> None:
    emitter = RecordingEmitter(cancel_after=3)
    with pytest.raises(RunCancelled):
        await run(ScriptedProvider(good_steps()), emitter, flush_s=0, flush_bytes=1)
    assert not any(files for _, files in emitter.batches)


async def test_a_retried_request_and_a_silent_model_are_events_of_the_phase() -> None:
    """Readers tell a model that is slow (these events keep coming) from a worker that is gone
    (nothing comes): each retry and each stretch of silence is in the log."""
    thinking = asyncio.Event()
    steps = good_steps()
    retry = Retrying(number=1, of=4, wait_s=0.4, reason="Gemini answered 503: overloaded")
    models = steps[1]
    assert isinstance(models, list)
    steps[1] = [retry, thinking, *models]

    class Waking(RecordingEmitter):
        async def emit(self, *events: NewEvent, files: Sequence[NewFile] = ()) -> None:
            await super().emit(*events, files=files)
            if sum(e.type is EventType.LLM_WAITING for e in self.events) == 2:
                thinking.set()

    emitter = Waking()
    async with asyncio.timeout(10):
        await run(ScriptedProvider(steps), emitter, waiting_s=0.02)

    notes = [e for e in emitter.events if e.type in (EventType.LLM_RETRYING, EventType.LLM_WAITING)]
    assert [e.type for e in notes] == [
        EventType.LLM_RETRYING,
        EventType.LLM_WAITING,
        EventType.LLM_WAITING,
    ]
    assert all(e.stage == "models" for e in notes)
    assert notes[0].data == {
        "phase": "models",
        "attempt": 1,
        "request": 1,
        "of": 4,
        "wait_s": 0.4,
        "reason": "Gemini answered 503: overloaded",
    }
    assert notes[0].message == (
        "Scripted did not answer: retry 1 of 3 in 0.4 s (Gemini answered 503: overloaded)"
    )
    waited = [e.data["waited_s"] for e in notes[1:]]
    assert waited == sorted(waited)
    assert notes[1].message.startswith("Waiting for Scripted: nothing for ")
    progress = [e.progress for e in emitter.events]
    assert progress == sorted(progress)
