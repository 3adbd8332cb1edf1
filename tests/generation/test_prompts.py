"""The prompts a model reads: the spec, the phase, earlier files in block form, and repair."""

from __future__ import annotations

import json

import pytest

from service.generation.parsing import CLOSE, OPEN, parse_answer
from service.generation.phases import PHASES, Phase
from service.generation.prompts import CONTEXT_CHARS, SYSTEM, phase_prompt, repair_prompt
from service.generation.providers import Prompt
from service.spec import Spec
from tests.helpers import SPEC


@pytest.fixture
def spec() -> Spec:
    return Spec.model_validate({**SPEC, "description": "A tiny shop ☕"})


def spec_section(user: str) -> str:
    head = "Project specification:\n"
    assert head in user
    return user.split(head, 1)[1].split("\n\n", 1)[0]


def test_the_system_prompt_shows_the_block_format_the_parser_accepts() -> None:
    lines = SYSTEM.splitlines()
    assert any(line.startswith(OPEN) and line.endswith(">>>") for line in lines)
    assert CLOSE in lines  # on a line of its own

    # The example block in the system prompt is itself a valid answer.
    example = parse_answer(SYSTEM)
    assert [file.path for file in example.files] == ["relative/path/to/file.py"]


def test_the_system_prompt_states_the_path_rules() -> None:
    assert "relative" in SYSTEM
    assert "forward slashes" in SYSTEM
    assert "'..'" in SYSTEM


@pytest.mark.parametrize("phase", PHASES, ids=[phase.stage for phase in PHASES])
def test_phase_prompt_carries_the_spec_json_and_the_phase(spec: Spec, phase: Phase) -> None:
    prompt = phase_prompt(spec, phase, {})

    assert json.loads(spec_section(prompt.user)) == spec.model_dump(mode="json", exclude_none=True)
    assert Spec.model_validate(json.loads(spec_section(prompt.user))) == spec
    assert f"Phase {phase.number} of {len(PHASES)} ({phase.title})" in prompt.user
    assert phase.goal in prompt.user
    assert prompt.stage == phase.stage
    assert prompt.system == SYSTEM
    assert prompt.spec == spec
    assert dict(prompt.files) == {}


def test_the_spec_json_leaves_out_unset_fields(spec: Spec) -> None:
    bare = Spec.model_validate(SPEC)

    section = json.loads(spec_section(phase_prompt(bare, PHASES[0], {}).user))

    assert "description" not in section
    assert section["project"] == "shop"


def test_the_first_phase_says_no_files_exist_yet(spec: Spec) -> None:
    prompt = phase_prompt(spec, PHASES[0], {})

    assert "No files exist yet." in prompt.user
    assert OPEN not in prompt.user


def test_earlier_files_appear_in_block_form(spec: Spec) -> None:
    files = {
        "pyproject.toml": '[project]\nname = "shop"\n',
        "app/models/user.py": "class User:\n\n    email: str\n",
        "README.md": "# Shop ☕\n",
    }

    prompt = phase_prompt(spec, PHASES[2], files)

    for path, content in files.items():
        assert f"{OPEN}{path}>>>\n{content}{CLOSE}" in prompt.user
    # The context is in the very format the parser reads, so a model sees what it must write.
    shown = parse_answer(prompt.user).files
    assert [(file.path, file.content) for file in shown] == list(files.items())
    assert dict(prompt.files) == files


def test_files_beyond_the_context_budget_are_omitted_with_a_note(spec: Spec) -> None:
    first = "a" * (CONTEXT_CHARS - 1000)
    too_big = "B" * 2000
    small = "c = 3\n"
    files = {"app/first.py": first, "app/too_big.py": too_big, "app/small.py": small}

    prompt = phase_prompt(spec, PHASES[3], files)

    assert first in prompt.user
    assert too_big not in prompt.user
    assert f"{OPEN}app/too_big.py>>>\n(omitted: 2000 characters)\n{CLOSE}" in prompt.user
    assert f"{OPEN}app/small.py>>>\n{small}{CLOSE}" in prompt.user  # later small ones still fit
    assert dict(prompt.files) == files  # the structured form keeps everything


def test_a_file_exactly_filling_the_budget_is_shown(spec: Spec) -> None:
    files = {"a.txt": "x" * (CONTEXT_CHARS - 10), "b.txt": "y" * 10, "c.txt": "z"}

    prompt = phase_prompt(spec, PHASES[1], files)

    assert "y" * 10 in prompt.user
    assert f"{OPEN}c.txt>>>\n(omitted: 1 characters)\n{CLOSE}" in prompt.user


def test_the_prompt_stays_bounded_however_many_files_exist(spec: Spec) -> None:
    files = {f"app/f{i}.py": "x" * 10_000 for i in range(50)}

    prompt = phase_prompt(spec, PHASES[3], files)

    assert len(prompt.user) < CONTEXT_CHARS + 20_000
    assert prompt.user.count("(omitted: 10000 characters)") == 50 - CONTEXT_CHARS // 10_000


def test_repair_prompt_keeps_the_request_and_adds_the_problem_and_the_answer(
    spec: Spec,
) -> None:
    original = phase_prompt(spec, PHASES[1], {"app/main.py": "app = 1\n"})
    answer = "Sorry, here is the file:\n<<<FILE app/models/user.py>>>\nclass User: ...\n"
    problem = "found 1 '<<<FILE <path>>>>' lines and 0 '<<<END FILE>>>' lines"

    repaired = repair_prompt(original, answer, problem)

    assert repaired.user.startswith(original.user)
    assert problem in repaired.user
    assert answer in repaired.user
    assert repaired.stage == original.stage
    assert repaired.system == original.system
    assert repaired.spec == original.spec
    assert dict(repaired.files) == dict(original.files)


def test_repair_prompt_bounds_a_huge_previous_answer(spec: Spec) -> None:
    original = phase_prompt(spec, PHASES[0], {})
    answer = "A" * CONTEXT_CHARS + "TAIL-NOT-SHOWN"

    repaired = repair_prompt(original, answer, "no file blocks")

    assert "A" * CONTEXT_CHARS in repaired.user
    assert "TAIL-NOT-SHOWN" not in repaired.user


def test_a_repair_of_a_repair_still_carries_the_original_request(spec: Spec) -> None:
    original = phase_prompt(spec, PHASES[2], {})

    twice = repair_prompt(repair_prompt(original, "one", "first problem"), "two", "second")

    assert isinstance(twice, Prompt)
    assert original.user in twice.user
    assert "second" in twice.user
    assert twice.stage == original.stage == "api"
