"""Verification rounds as the generator drives them: a scripted provider, a scripted checker
and a recording emitter, so each path (pass, repair, stay broken, resume at each point) is
exact. The same rounds with the real sandbox and the real log: test_verified_runs.py."""

from __future__ import annotations

from typing import Any

import pytest

from service.events import EVENT_DATA, EventType, NewEvent, NewFile, Verification
from service.generation.generator import GenerationFailed, PhasedGenerator, Tuning
from service.generation.phases import BUILD_END, PHASES, PHASES_END
from service.generation.verification import OUTPUT_CHARS, check_data, round_outcome
from service.spec import Spec
from service.verify.checks import CheckResult, Counts
from service.verify.sandbox import SandboxUnavailable
from tests.generation.scripted import (
    RecordingEmitter,
    ScriptedChecker,
    ScriptedProvider,
    Step,
    answer,
    failed,
    passed,
)
from tests.helpers import SPEC

SPEC_MODEL = Spec.model_validate(SPEC)
STAGES = [phase.stage for phase in PHASES]
ALL_PASS = [passed("compile"), passed("import"), passed("tests", 31)]
BROKEN = NewFile("app/main.py", "def main(:\n", "python")
FIXED = NewFile("app/main.py", "def main() -> None:\n    pass\n", "python")
COMPILE_FAILS = failed(
    "compile",
    "app/main.py does not compile: line 1: invalid syntax",
    ("app/main.py",),
    '  File "app/main.py", line 1\n    def main(:\n             ^\nSyntaxError: invalid syntax\n',
)


def build_steps() -> list[Step]:
    """The four building phases' answers; core writes the broken app/main.py."""
    return [
        answer(BROKEN, NewFile("app/settings.py", "DEBUG = False\n", "python"))
        if phase.stage == "core"
        else answer(NewFile(f"app/{phase.stage}.py", f"NAME = {phase.stage!r}\n", "python"))
        for phase in PHASES
    ]


async def generate(
    provider: ScriptedProvider,
    checker: ScriptedChecker,
    emitter: RecordingEmitter,
    *,
    verify: Any = "tests",
    repairs_max: int = 2,
    **resume: Any,
) -> Verification:
    generator = PhasedGenerator(
        provider,
        emitter,
        Tuning(flush_s=0, repairs_max=repairs_max),
        checker=checker,
    )
    return await generator.run(SPEC_MODEL, verify=verify, **resume)


def of_type(emitter: RecordingEmitter, kind: EventType) -> list[NewEvent]:
    return [event for event in emitter.events if event.type is kind]


def after_building(emitter: RecordingEmitter) -> list[NewEvent]:
    """The events from the first verify or repair phase on."""
    first = next(i for i, event in enumerate(emitter.events) if event.stage in ("verify", "repair"))
    return emitter.events[first:]


def documented(event: NewEvent) -> None:
    """The event's data has exactly the keys its TypedDict allows, and all it requires."""
    shape = EVENT_DATA[event.type]
    allowed = set(shape.__annotations__)
    required: frozenset[str] = getattr(shape, "__required_keys__", frozenset())
    assert required <= set(event.data) <= allowed, (event.type, sorted(event.data))


async def test_verify_off_runs_no_check_and_says_so() -> None:
    checker, emitter = ScriptedChecker([]), RecordingEmitter()

    outcome = await generate(ScriptedProvider(build_steps()), checker, emitter, verify="off")

    assert outcome == {
        "level": "off",
        "ok": True,
        "summary": "not verified (verify: off)",
        "rounds": 0,
        "repairs": 0,
        "checks": [],
    }
    assert checker.seen == []
    assert {event.stage for event in emitter.events} == set(STAGES)
    assert all(e.data["of"] == 4 for e in of_type(emitter, EventType.PHASE_STARTED))


async def test_a_passing_round_is_a_check_per_step_then_the_phase_with_its_outcome() -> None:
    checker, emitter = ScriptedChecker([ALL_PASS]), RecordingEmitter()

    outcome = await generate(ScriptedProvider(build_steps()), checker, emitter)

    tail = after_building(emitter)
    assert [event.type for event in tail] == [
        EventType.PHASE_STARTED,
        EventType.CHECK_COMPLETED,
        EventType.CHECK_COMPLETED,
        EventType.CHECK_COMPLETED,
        EventType.PHASE_COMPLETED,
    ]
    for event in tail:
        documented(event)
    assert {**tail[0].data, "provider": None, "model": None} == {
        "phase": "verify",
        "number": 5,
        "of": 5,
        "attempt": 1,
        "round": 1,
        "provider": None,
        "model": None,
    }
    assert tail[0].message == "Phase 5 of 5: Verify"
    assert [event.data["step"] for event in tail[1:4]] == ["compile", "import", "tests"]
    assert tail[3].data["counts"] == {
        "passed": 31,
        "failed": 0,
        "errors": 0,
        "skipped": 0,
        "total": 31,
    }
    assert all(event.data["output"] == "" for event in tail[1:4]), "output kept for a pass"
    assert tail[3].message == "Tests: tests: 31 pass"
    assert outcome["ok"]
    assert (outcome["rounds"], outcome["repairs"]) == (1, 0)
    assert outcome["checks"] == [event.data for event in tail[1:4]]
    assert tail[-1].data["verification"] == outcome
    assert tail[-1].data["round"] == 1
    assert tail[-1].message.startswith("Verify passed: ")
    # The checker saw every stored file, the building phases' last version of each.
    assert set(checker.seen[0]) == {"app/main.py", "app/settings.py"} | {
        f"app/{stage}.py" for stage in STAGES[1:]
    }
    assert all(e.data["of"] == 5 for e in of_type(emitter, EventType.PHASE_STARTED))
    progress = [event.progress for event in emitter.events]
    assert progress == sorted(progress)
    assert tail[0].progress == BUILD_END
    assert tail[-1].progress == pytest.approx((PHASES_END - BUILD_END) / 5 + BUILD_END)


async def test_the_compile_level_runs_the_compile_step_alone() -> None:
    checker, emitter = ScriptedChecker([[passed("compile")]]), RecordingEmitter()

    outcome = await generate(ScriptedProvider(build_steps()), checker, emitter, verify="compile")

    assert [e.data["step"] for e in of_type(emitter, EventType.CHECK_COMPLETED)] == ["compile"]
    assert outcome["ok"]
    assert outcome["level"] == "compile"


async def test_a_failed_check_is_repaired_by_the_model_and_verified_again() -> None:
    provider = ScriptedProvider([*build_steps(), answer(FIXED)])
    checker = ScriptedChecker([[COMPILE_FAILS], ALL_PASS])
    emitter = RecordingEmitter()

    outcome = await generate(provider, checker, emitter)

    assert [(e.stage, e.type) for e in after_building(emitter) if e.type.startswith("phase")] == [
        ("verify", EventType.PHASE_STARTED),
        ("verify", EventType.PHASE_COMPLETED),
        ("repair", EventType.PHASE_STARTED),
        ("repair", EventType.PHASE_COMPLETED),
        ("verify", EventType.PHASE_STARTED),
        ("verify", EventType.PHASE_COMPLETED),
    ]
    first_round = of_type(emitter, EventType.PHASE_COMPLETED)[-3].data["verification"]
    assert first_round["ok"] is False
    assert first_round["summary"] == "app/main.py does not compile: line 1: invalid syntax"
    repair_started = next(e for e in emitter.events if e.stage == "repair")
    assert repair_started.message == "Repair 1 of 2"
    assert (repair_started.data["round"], repair_started.data["number"]) == (1, 5)
    # The prompt: the check's reason and output, and the failing file shown first, whole.
    repair_prompt = provider.prompts[-1]
    assert repair_prompt.stage == "repair"
    assert "failed at the compile step: app/main.py does not compile" in repair_prompt.user
    assert "SyntaxError: invalid syntax" in repair_prompt.user
    assert repair_prompt.user.index("def main(:") < repair_prompt.user.index("DEBUG = False")
    # The repair's file supersedes the first version; the second round checked it.
    saved = [e.data for e in of_type(emitter, EventType.FILE_SAVED) if e.stage == "repair"]
    assert saved == [
        {"path": "app/main.py", "size": FIXED.size, "sha256": FIXED.sha256, "language": "python"}
    ]
    assert checker.seen[0]["app/main.py"] == BROKEN.content
    assert checker.seen[1]["app/main.py"] == FIXED.content
    assert checker.seen[1]["app/settings.py"] == "DEBUG = False\n"
    second = of_type(emitter, EventType.PHASE_STARTED)[-1]
    assert second.message == "Phase 5 of 5: Verify (round 2, after repair 1)"
    assert (outcome["ok"], outcome["rounds"], outcome["repairs"]) == (True, 2, 1)
    repaired = of_type(emitter, EventType.PHASE_COMPLETED)[-2].data
    assert (repaired["phase"], repaired["round"], repaired["files"]) == ("repair", 1, 1)
    assert repaired["prompt_tokens"] == 100
    assert repaired["output_tokens"] > 0
    progress = [event.progress for event in emitter.events]
    assert progress == sorted(progress)
    assert max(progress) <= PHASES_END


async def test_code_that_stays_broken_fails_after_the_repairs_with_the_reason() -> None:
    provider = ScriptedProvider([*build_steps(), answer(BROKEN), answer(BROKEN)])
    checker = ScriptedChecker([[COMPILE_FAILS]] * 3)
    emitter = RecordingEmitter()

    with pytest.raises(GenerationFailed) as failure:
        await generate(provider, checker, emitter)

    assert str(failure.value) == (
        "the generated code did not pass verification (after 2 repairs): "
        "app/main.py does not compile: line 1: invalid syntax"
    )
    verification = failure.value.verification
    assert verification is not None
    assert (verification["ok"], verification["rounds"], verification["repairs"]) == (False, 3, 2)
    assert [e.stage for e in of_type(emitter, EventType.PHASE_COMPLETED)][4:] == [
        "verify",
        "repair",
        "verify",
        "repair",
        "verify",
    ]
    assert len(provider.prompts) == 6
    assert emitter.events[-1].progress == PHASES_END


async def test_a_template_provider_is_never_asked_to_repair() -> None:
    provider = ScriptedProvider(build_steps(), repairs=False)
    checker, emitter = ScriptedChecker([[COMPILE_FAILS]]), RecordingEmitter()

    with pytest.raises(GenerationFailed, match=r"^the generated code did not pass verification: "):
        await generate(provider, checker, emitter)

    assert "repair" not in {event.stage for event in emitter.events}
    assert len(provider.prompts) == len(PHASES)
    # With no repair to come, the one round spans the whole of verification.
    assert emitter.events[-1].progress == PHASES_END


def failed_round(round_: int, repairs: int) -> Verification:
    return round_outcome("tests", [check_data(COMPILE_FAILS, round_)], round_, repairs)


def built_files() -> dict[str, str]:
    return {"app/main.py": BROKEN.content, "app/settings.py": "DEBUG = False\n"}


async def test_a_run_resumed_after_a_failed_verify_goes_straight_to_its_repair() -> None:
    provider = ScriptedProvider([answer(FIXED)])
    checker, emitter = ScriptedChecker([ALL_PASS]), RecordingEmitter()

    outcome = await generate(
        provider,
        checker,
        emitter,
        completed=(*STAGES, "verify"),
        files=built_files(),
        progress=0.89,
        verified=failed_round(1, 0),
    )

    assert emitter.events[0].type is EventType.PHASE_STARTED
    assert (emitter.events[0].stage, emitter.events[0].data["round"]) == ("repair", 1)
    assert "SyntaxError: invalid syntax" in provider.prompts[0].user  # from the stored round
    assert len(checker.seen) == 1
    assert checker.seen[0]["app/main.py"] == FIXED.content
    assert (outcome["rounds"], outcome["repairs"]) == (2, 1)


async def test_a_run_resumed_after_a_repair_verifies_the_repaired_files() -> None:
    checker, emitter = ScriptedChecker([ALL_PASS]), RecordingEmitter()
    files = built_files() | {"app/main.py": FIXED.content}

    outcome = await generate(
        ScriptedProvider([]),
        checker,
        emitter,
        completed=(*STAGES, "verify", "repair"),
        files=files,
        progress=0.92,
        verified=failed_round(1, 0),
    )

    started = of_type(emitter, EventType.PHASE_STARTED)
    assert [(e.stage, e.data["round"]) for e in started] == [("verify", 2)]
    assert checker.seen == [files]
    assert (outcome["ok"], outcome["rounds"], outcome["repairs"]) == (True, 2, 1)
    assert emitter.events[0].progress >= 0.92


async def test_a_run_resumed_in_the_middle_of_a_verify_runs_that_round_again() -> None:
    checker, emitter = ScriptedChecker([ALL_PASS]), RecordingEmitter()

    outcome = await generate(
        ScriptedProvider([]),
        checker,
        emitter,
        completed=tuple(STAGES),
        files=built_files(),
        progress=0.86,
    )

    started = of_type(emitter, EventType.PHASE_STARTED)
    assert [(e.stage, e.data["round"]) for e in started] == [("verify", 1)]
    assert (outcome["rounds"], outcome["repairs"]) == (1, 0)


async def test_a_run_resumed_after_its_last_repair_failed_ends_failed_without_a_call() -> None:
    provider = ScriptedProvider([])
    checker, emitter = ScriptedChecker([]), RecordingEmitter()

    with pytest.raises(GenerationFailed, match=r"\(after 2 repairs\)"):
        await generate(
            provider,
            checker,
            emitter,
            completed=(*STAGES, "verify", "repair", "verify", "repair", "verify"),
            files=built_files(),
            progress=0.97,
            verified=failed_round(3, 2),
        )

    assert emitter.events == []
    assert provider.prompts == []
    assert checker.seen == []


async def test_a_missing_sandbox_fails_the_run_saying_what_to_do() -> None:
    class Unavailable(ScriptedChecker):
        async def __call__(self, files: Any, steps: Any) -> Any:
            raise SandboxUnavailable("bubblewrap is not installed: run `make sandbox`")
            yield  # an async generator, as the real checker is

    emitter = RecordingEmitter()
    with pytest.raises(GenerationFailed) as failure:
        await generate(ScriptedProvider(build_steps()), Unavailable([]), emitter)

    assert str(failure.value) == (
        "the code could not be verified on this server: bubblewrap is not installed: run "
        '`make sandbox` (or create the generation with "verify": "off")'
    )


def test_a_failed_check_keeps_the_end_of_its_output_and_the_limit_that_stopped_it() -> None:
    output = "".join(f"line {i}\n" for i in range(5_000))
    result = CheckResult(
        "tests", False, "the test suite was stopped", Counts(), (), 180_000, output, "timeout"
    )

    data = check_data(result, 2)

    assert len(data["output"]) == OUTPUT_CHARS
    assert output.endswith(data["output"])
    assert (data["stopped_by"], data["round"]) == ("timeout", 2)
    assert "stopped_by" not in check_data(passed("tests"), 1)


def test_a_round_passes_only_when_every_step_of_its_level_ran_and_passed() -> None:
    compile_only = [check_data(passed("compile"), 1)]

    assert round_outcome("compile", compile_only, 1, 0)["ok"] is True
    assert round_outcome("tests", compile_only, 1, 0)["ok"] is False
    assert round_outcome("tests", [], 1, 0)["summary"] == "no check ran"
