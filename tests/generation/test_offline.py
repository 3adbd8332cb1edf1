from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import ValidationError

from service.events import EventType, NewEvent, NewFile
from service.generation import offline
from service.generation.offline import plan
from service.spec import Spec
from tests.conftest import SPEC

PHASES = ["core", "models", "api", "tests"]


class RecordingEmitter:
    """Our own Emitter protocol, recording what a generator states (no storage involved)."""

    def __init__(self) -> None:
        self.events: list[NewEvent] = []
        self.files: dict[str, NewFile] = {}
        self.files_by_event: list[tuple[NewEvent, tuple[NewFile, ...]]] = []

    async def emit(self, *events: NewEvent, files: Sequence[NewFile] = ()) -> None:
        self.events.extend(events)
        self.files_by_event.extend((event, tuple(files)) for event in events)
        for file in files:
            self.files[file.path] = file


def all_files(spec: Spec) -> list[NewFile]:
    return [file for phase in plan(spec) for file in phase.files]


def assert_all_compile(files: Sequence[NewFile]) -> None:
    python = [file for file in files if file.path.endswith(".py")]
    assert python
    for file in python:
        assert file.language == "python"
        compile(file.content, file.path, "exec")


async def run(spec: Spec) -> RecordingEmitter:
    emitter = RecordingEmitter()
    await offline.generate(spec, emitter, delay_s=0)
    return emitter


def test_plan_has_four_phases_in_order() -> None:
    phases = plan(Spec.model_validate(SPEC))
    assert [phase.stage for phase in phases] == PHASES
    assert all(phase.files for phase in phases)


def test_plan_has_one_model_route_and_test_module_per_entity() -> None:
    phases = {phase.stage: phase for phase in plan(Spec.model_validate(SPEC))}
    assert [f.path for f in phases["models"].files] == ["app/models/user.py", "app/models/order.py"]
    assert [f.path for f in phases["api"].files] == ["app/api/user.py", "app/api/order.py"]
    assert [f.path for f in phases["tests"].files] == ["tests/test_user.py", "tests/test_order.py"]
    assert "class User(BaseModel)" in phases["models"].files[0].content
    assert "    email: str" in phases["models"].files[0].content
    assert "    user: UUID" in phases["models"].files[1].content  # a reference is an id


def test_every_generated_python_file_compiles() -> None:
    assert_all_compile(all_files(Spec.model_validate(SPEC)))


def test_camel_case_entities_get_snake_case_modules_that_compile() -> None:
    spec = Spec.model_validate(
        {
            "project": "crm",
            "entities": [
                {"name": "LineItem", "fields": {"qty": "int", "at": "datetime", "ref": "uuid"}},
                {"name": "Invoice", "fields": {"lines": "ref:LineItem", "paid": "bool"}},
            ],
        }
    )
    files = all_files(spec)
    assert "app/models/line_item.py" in [f.path for f in files]
    assert_all_compile(files)


@pytest.mark.parametrize("name", ["Class", "Return", "Import", "Global"])
def test_entities_named_like_a_capitalised_keyword_still_compile(name: str) -> None:
    # "Class" (a school), "Return" (a shop) are valid entity names, but their lower-cased
    # module names are Python keywords.
    spec = Spec.model_validate(
        {"project": "p", "entities": [{"name": name, "fields": {"x": "int"}}]}
    )
    assert_all_compile(all_files(spec))


@pytest.mark.parametrize(
    "description",
    ['A "customer" of the shop', 'Ends with a "quote"', 'Has a triple """ quote', "C:\\path\\"],
)
def test_entity_descriptions_with_quotes_or_backslashes_still_compile(description: str) -> None:
    spec = Spec.model_validate(
        {
            "project": "p",
            "entities": [{"name": "User", "fields": {"x": "int"}, "description": description}],
        }
    )
    assert_all_compile(all_files(spec))


def test_distinct_entities_never_write_the_same_file() -> None:
    spec = Spec.model_validate(
        {
            "project": "p",
            "entities": [
                {"name": "OrderItem", "fields": {"x": "int"}},
                {"name": "Order", "fields": {"y": "int"}},
                {"name": "Item", "fields": {"z": "int"}},
                {"name": "Class", "fields": {"c": "int"}},
            ],
        }
    )
    paths = [file.path for file in all_files(spec)]
    assert len(paths) == len(set(paths)), f"two entities write the same file: {sorted(paths)}"


@pytest.mark.parametrize(("first", "second"), [("User", "user"), ("UserItem", "User_item")])
def test_entities_that_would_share_a_module_are_refused(first: str, second: str) -> None:
    with pytest.raises(ValidationError, match="would share the module name"):
        Spec.model_validate(
            {
                "project": "p",
                "entities": [
                    {"name": first, "fields": {"x": "int"}},
                    {"name": second, "fields": {"y": "int"}},
                ],
            }
        )


async def test_generate_emits_phase_started_deltas_file_saved_and_phase_completed_per_phase() -> (
    None
):
    spec = Spec.model_validate(SPEC)
    emitter = await run(spec)
    expected: list[tuple[str, str]] = []
    for phase in plan(spec):
        expected.append((EventType.PHASE_STARTED, phase.stage))
        for file in phase.files:
            chunks = -(-len(file.content) // offline.CHUNK_CHARS)
            expected.extend([(EventType.LLM_DELTA, phase.stage)] * chunks)
            expected.append((EventType.FILE_SAVED, phase.stage))
        expected.append((EventType.PHASE_COMPLETED, phase.stage))
    assert [(event.type, event.stage) for event in emitter.events] == expected
    started = [e for e in emitter.events if e.type is EventType.PHASE_STARTED]
    assert [e.data["phase"] for e in started] == PHASES
    assert [e.data["number"] for e in started] == [1, 2, 3, 4]
    # The generator states neither the started nor the terminal event: the runner does.
    assert not any(e.type in (EventType.STARTED, EventType.SUCCEEDED) for e in emitter.events)


async def test_the_deltas_of_a_file_concatenate_to_its_content() -> None:
    spec = Spec.model_validate(
        {
            "project": "big",
            "entities": [
                {"name": "Wide", "fields": {f"field_{i}": "str" for i in range(40)}},
                {"name": "Small", "fields": {"wide": "Wide"}},
            ],
        }
    )
    emitter = await run(spec)
    text: dict[str, str] = {}
    pending = ""
    for event in emitter.events:
        if event.type is EventType.LLM_DELTA:
            pending += event.data["text"]
        elif event.type is EventType.FILE_SAVED:
            text[event.data["path"]] = pending
            pending = ""
    assert pending == ""
    files = all_files(spec)
    assert set(text) == {file.path for file in files}
    for file in files:
        assert text[file.path] == file.content
    assert any(len(f.content) > offline.CHUNK_CHARS for f in files)  # some span several deltas


async def test_progress_is_monotonic_within_zero_and_one() -> None:
    emitter = await run(Spec.model_validate(SPEC))
    progress = [event.progress for event in emitter.events]
    assert all(0.0 <= p <= 1.0 for p in progress)
    assert progress == sorted(progress)
    assert progress[-1] > progress[0]


async def test_file_saved_data_matches_the_file_stored_with_it() -> None:
    spec = Spec.model_validate(SPEC)
    emitter = await run(spec)
    saved = [(e, files) for e, files in emitter.files_by_event if e.type is EventType.FILE_SAVED]
    assert len(saved) == len(all_files(spec))
    for event, files in saved:
        assert len(files) == 1
        file = files[0]
        data: dict[str, Any] = dict(event.data)
        content = file.content.encode("utf-8")
        assert data["path"] == file.path
        assert data["size"] == len(content)
        assert data["sha256"] == hashlib.sha256(content).hexdigest()
    for event, files in emitter.files_by_event:
        if event.type is not EventType.FILE_SAVED:
            assert files == ()
