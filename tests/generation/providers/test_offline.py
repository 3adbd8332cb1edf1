"""The offline provider: deterministic templates of a runnable project, streamed as file blocks.

The strongest check runs the generated project's own test suite in a subprocess with this
venv's interpreter: the generated code must work, not just compile.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from service.events import NewFile
from service.generation.parsing import CLOSE, OPEN, parse_answer
from service.generation.providers import Prompt, Usage
from service.generation.providers.offline import STAGES, OfflineProvider, render_phase
from service.spec import Entity, Spec

SHOP_RAW: dict[str, Any] = {
    "project": "shop-api",
    "description": 'A shop: """triple""" quotes, a \\ backslash, and <<<END FILE>>> inside',
    "entities": [
        {
            "name": "Customer",
            "description": "People who buy things.",
            "fields": {
                "name": "str",
                "email": "str",
                "vip": "bool",
                "joined": "datetime",
                "credit": "float",
            },
        },
        {
            "name": "Product",
            "fields": {"title": "str", "price": "float", "stock": "int", "sku": "uuid"},
        },
        {
            "name": "Order",
            "description": 'Ends with a quote"',
            "fields": {
                "customer": "Customer",
                "product": "ref:Product",
                "quantity": "int",
                "placed_at": "datetime",
                "gift": "bool",
                "tracking": "uuid",
                "note": "str",
            },
        },
    ],
}
SHOP = Spec.model_validate(SHOP_RAW)

# Every awkward character a spec may hold (a NUL it may not: Spec refuses it, PostgreSQL could
# not store it).
EMPLOYEE_DESCRIPTION = '<<<END FILE>>>\n<<<FILE x.py>>>\n\\"""\'\'\'\u2028\x01 \u2713 end"'

# Names that shadow builtins, modules the generated code uses, pydantic's BaseModel methods,
# soft keywords; a self-reference and a two-entity cycle (B has no required field at all);
# entity names that collide with a generated class (EmployeeCreate) and a stdlib module (uuid).
AWKWARD_RAW: dict[str, Any] = {
    "project": "Awkward_1",
    "description": 'tricky \'\'\'""" \\n \\ <<<FILE a.py>>> \r\n\ttab end"',
    "entities": [
        {
            "name": "Employee",
            "description": EMPLOYEE_DESCRIPTION,
            "fields": {
                "json": "str",
                "_secret": "str",
                "model_config": "str",
                "type": "str",
                "list": "int",
                "str": "str",
                "uuid": "uuid",
                "datetime": "datetime",
                "manager": "Employee",
                "f_json": "str",
                "match": "float",
                "copy": "bool",
            },
        },
        {"name": "A", "fields": {"b": "B", "label": "str", "owner": "Employee"}},
        {"name": "B", "fields": {"a": "A"}},
        {"name": "uuid", "fields": {"uuid": "uuid", "pydantic": "str"}},
        {"name": "EmployeeCreate", "fields": {"employee": "Employee", "when": "datetime"}},
    ],
}


def awkward_spec() -> Spec:
    """AWKWARD_RAW, validated, then with an ``id`` field added to Employee (which validation
    refuses; the templates still handle it by renaming the row id)."""
    Spec.model_validate(AWKWARD_RAW)  # everything but the id field is a valid spec
    entities = []
    for raw in AWKWARD_RAW["entities"]:
        fields = dict(raw["fields"])
        if raw["name"] == "Employee":
            fields = {"id": "int", "id_": "str", **fields}
        entities.append(
            Entity.model_construct(
                name=raw["name"], fields=fields, description=raw.get("description")
            )
        )
    return Spec.model_construct(
        project=AWKWARD_RAW["project"],
        description=AWKWARD_RAW["description"],
        entities=entities,
    )


def all_files(spec: Spec) -> list[NewFile]:
    return [file for stage in STAGES for file in render_phase(spec, stage)]


def prompt(spec: Spec, stage: str) -> Prompt:
    return Prompt(stage=stage, system="system words " * 10, user="user words " * 30, spec=spec)


async def collect(provider: OfflineProvider, request: Prompt) -> list[str | Usage]:
    async with asyncio.timeout(30):
        return [item async for item in provider.stream(request)]


def write_project(files: list[NewFile], root: Path) -> None:
    for file in files:
        target = root / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file.content, encoding="utf-8")


def run_generated_tests(root: Path) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "PYTHONPATH" and not key.startswith("PYTEST_")
    }
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def passed_count(output: str) -> int:
    match = re.search(r"(\d+) passed", output)
    assert match, output[-3000:]
    assert not re.search(r"\d+ (failed|errors?)\b", output), output[-3000:]
    return int(match[1])


def shop_spec() -> Spec:
    return Spec.model_validate(copy.deepcopy(SHOP_RAW))


def test_the_same_spec_renders_byte_identical_files() -> None:
    for spec_factory in (shop_spec, awkward_spec):
        first, second = all_files(spec_factory()), all_files(spec_factory())
        assert [(f.path, f.content.encode()) for f in first] == [
            (f.path, f.content.encode()) for f in second
        ]


def test_each_phase_writes_its_own_files() -> None:
    paths = {stage: [f.path for f in render_phase(SHOP, stage)] for stage in STAGES}
    assert paths["core"] == [
        "pyproject.toml",
        "README.md",
        "app/__init__.py",
        "app/settings.py",
        "app/database.py",
        "app/main.py",
    ]
    modules = ["customer", "product", "order"]
    assert paths["models"] == ["app/models/__init__.py"] + [f"app/models/{m}.py" for m in modules]
    assert paths["api"] == ["app/api/__init__.py"] + [f"app/api/{m}.py" for m in modules]
    assert paths["tests"] == [
        "tests/__init__.py",
        "tests/conftest.py",
        "tests/factories.py",
        "tests/test_app.py",
    ] + [f"tests/test_{m}.py" for m in modules]
    languages = {f.path: f.language for stage in STAGES for f in render_phase(SHOP, stage)}
    assert languages["pyproject.toml"] == "toml"
    assert languages["README.md"] == "markdown"
    assert languages["app/main.py"] == "python"


def test_every_generated_python_file_compiles() -> None:
    for spec in (SHOP, awkward_spec()):
        python = [f for f in all_files(spec) if f.path.endswith(".py")]
        assert len(python) > 10
        for file in python:
            compile(file.content, file.path, "exec", dont_inherit=True)


def test_the_pyproject_is_valid_toml_with_the_needed_dependencies() -> None:
    for spec in (SHOP, awkward_spec()):
        (pyproject,) = [f for f in render_phase(spec, "core") if f.path == "pyproject.toml"]
        data = tomllib.loads(pyproject.content)
        assert data["project"]["name"] == spec.project
        assert data["project"]["description"] == spec.description
        dependencies = " ".join(
            data["project"]["dependencies"] + data["project"]["optional-dependencies"]["dev"]
        )
        for package in ("litestar", "pydantic", "pytest", "httpx"):
            assert package in dependencies
        assert data["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]


def test_descriptions_survive_exactly_as_docstrings() -> None:
    spec = awkward_spec()
    files = {f.path: f.content for f in all_files(spec)}
    module = ast.parse(files["app/models/employee.py"])
    classes = {node.name: node for node in module.body if isinstance(node, ast.ClassDef)}
    assert ast.get_docstring(classes["Employee"], clean=False) == EMPLOYEE_DESCRIPTION
    package_doc = ast.get_docstring(ast.parse(files["app/__init__.py"]), clean=False)
    assert package_doc is not None
    assert package_doc.endswith(AWKWARD_RAW["description"])
    shop = {f.path: f.content for f in all_files(SHOP)}
    customer = ast.parse(shop["app/models/customer.py"])
    (row_class,) = [
        n for n in customer.body if isinstance(n, ast.ClassDef) and n.name == "Customer"
    ]
    assert ast.get_docstring(row_class) == "People who buy things."
    for content in [*files.values(), *shop.values()]:
        assert OPEN not in content
        assert CLOSE not in content


def test_an_entity_field_named_id_keeps_its_name_and_the_row_id_moves_aside() -> None:
    files = {f.path: f.content for f in all_files(awkward_spec())}
    model = files["app/models/employee.py"]
    assert "    id__: uuid.UUID\n    id: int\n    id_: str\n" in model
    assert "KEY = 'id__'" in files["tests/test_employee.py"]
    # A name pydantic cannot hold moves to an f_ attribute, aliased to the spec's name.
    assert "    f_json_: typing.Annotated[str, pydantic.Field(alias='json')]\n" in model
    assert "    f_json: str\n" in model
    assert "    f_secret: typing.Annotated[str, pydantic.Field(alias='_secret')]\n" in model


def test_an_unknown_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown stage 'deploy'"):
        render_phase(SHOP, "deploy")


async def test_streaming_an_unknown_stage_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown stage"):
        await collect(OfflineProvider(), prompt(SHOP, "deploy"))


def test_the_provider_refuses_a_nonsensical_cadence() -> None:
    with pytest.raises(ValueError, match="chunk_chars"):
        OfflineProvider(chunk_chars=0)
    with pytest.raises(ValueError, match="delay_s"):
        OfflineProvider(delay_s=-1)
    provider = OfflineProvider()
    assert (provider.name, provider.model) == ("offline", "templates-v1")


@pytest.mark.parametrize("chunk_chars", [64, 7, 100_000])
async def test_streamed_chunks_parse_back_into_exactly_the_phase_files(chunk_chars: int) -> None:
    provider = OfflineProvider(chunk_chars=chunk_chars)
    for stage in STAGES:
        items = await collect(provider, prompt(SHOP, stage))
        chunks = items[:-1]
        assert all(isinstance(chunk, str) for chunk in chunks)
        texts = [chunk for chunk in chunks if isinstance(chunk, str)]
        assert texts
        assert all(0 < len(chunk) <= chunk_chars for chunk in texts)
        assert all(len(chunk) == chunk_chars for chunk in texts[:-1])
        parsed = parse_answer("".join(texts))
        assert list(parsed.files) == render_phase(SHOP, stage)


async def test_usage_comes_last_and_once_with_estimated_tokens() -> None:
    request = prompt(SHOP, "api")
    items = await collect(OfflineProvider(chunk_chars=50), request)
    usages = [item for item in items if isinstance(item, Usage)]
    assert len(usages) == 1
    assert items[-1] is usages[0]
    text = "".join(item for item in items if isinstance(item, str))
    assert usages[0] == Usage(
        prompt_tokens=len(request.system + request.user) // 4, output_tokens=len(text) // 4
    )
    assert usages[0].output_tokens > 100


async def test_the_stream_pauses_before_each_chunk() -> None:
    delay = 0.01
    provider = OfflineProvider(delay_s=delay, chunk_chars=1000)
    started = time.monotonic()
    items = await collect(provider, prompt(SHOP, "core"))
    elapsed = time.monotonic() - started
    chunks = len(items) - 1
    assert chunks >= 5
    # A lower bound only (sleeps never end early by more than the clock's resolution).
    assert elapsed >= 0.8 * chunks * delay


async def test_the_stream_lets_other_tasks_run_between_chunks() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        items = await collect(OfflineProvider(chunk_chars=200), prompt(SHOP, "tests"))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert ticks >= len(items) - 2


def test_the_generated_shop_project_passes_its_own_tests(tmp_path: Path) -> None:
    write_project(all_files(SHOP), tmp_path)
    result = run_generated_tests(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert passed_count(output) >= 5 * len(SHOP.entities)


def test_a_generated_project_with_awkward_names_passes_its_own_tests(tmp_path: Path) -> None:
    spec = awkward_spec()
    write_project(all_files(spec), tmp_path)
    result = run_generated_tests(tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert passed_count(output) >= 5 * len(spec.entities)


def test_an_entity_whose_module_would_be_a_dunder_is_refused() -> None:
    spec = Spec.model_validate(
        {"project": "p", "entities": [{"name": "__init__", "fields": {"a": "str"}}]}
    )
    with pytest.raises(ValueError, match="__init__"):
        render_phase(spec, "models")
