"""The client's vocabulary is the service's: ``genstream_client/events.py`` is what
``clients/python/generate.py`` writes from ``service/events.py`` now, and the client stands
alone (it never imports the service, nor the generator, nor anything but httpx)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
import tomllib
import typing
from pathlib import Path
from types import ModuleType

import genstream_client
from genstream_client import events as client_events

from service import events as service_events
from service.settings import PROJECT_ROOT

CLIENT = PROJECT_ROOT / "clients" / "python"
REGENERATE = f"{sys.executable} clients/python/generate.py"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate", CLIENT / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_events_module_is_what_the_generator_writes_now() -> None:
    committed = (CLIENT / "genstream_client" / "events.py").read_text()
    assert committed == generator().render(), (
        f"genstream_client/events.py is out of date: run `{REGENERATE}` and commit it"
    )


def test_the_generated_vocabulary_equals_the_services() -> None:
    assert {t.name: t.value for t in client_events.EventType} == {
        t.name: t.value for t in service_events.EventType
    }
    assert {s.value for s in client_events.Status} == {s.value for s in service_events.Status}
    assert {t.value for t in client_events.TERMINAL_TYPES} == {
        t.value for t in service_events.TERMINAL_TYPES
    }
    for event_type, data in service_events.EVENT_DATA.items():
        ours = client_events.EVENT_DATA[client_events.EventType(event_type.value)]
        assert ours.__name__ == data.__name__
        theirs_hints = typing.get_type_hints(data, include_extras=True)
        ours_hints = typing.get_type_hints(ours, include_extras=True)
        assert {k: str(v) for k, v in ours_hints.items()} == {
            k: str(v).replace("service.events", "genstream_client.events")
            for k, v in theirs_hints.items()
        }


def test_a_key_marked_not_required_in_the_service_is_not_required_in_the_client() -> None:
    """Python 3.11 loses NotRequired under postponed annotations in ``__optional_keys__``;
    the generator reads the hints, so the client's TypedDicts say it."""
    source = (CLIENT / "genstream_client" / "events.py").read_text()
    assert "    reason: NotRequired[str]\n" in source
    assert "    error: NotRequired[str]\n" in source


def test_check_mode_exits_1_when_the_file_is_stale_and_writing_it_fixes_that(
    tmp_path: Path,
) -> None:
    stale = tmp_path / "events.py"
    stale.write_text("# stale\n")
    assert generator().main(["--check"], stale) == 1
    assert generator().main([], stale) == 0
    assert generator().main(["--check"], stale) == 0


def test_the_check_runs_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, "clients/python/generate.py", "--check"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_client_imports_only_the_standard_library_httpx_and_itself() -> None:
    package = Path(genstream_client.__file__).parent
    allowed = set(sys.stdlib_module_names) | {"httpx", "genstream_client"}
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_the_distribution_depends_on_httpx_only_with_a_lower_bound() -> None:
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert [d.split(">=")[0] for d in project["dependencies"]] == ["httpx"]
    assert ">=" in project["dependencies"][0]
    assert (CLIENT / "genstream_client" / "py.typed").exists()
