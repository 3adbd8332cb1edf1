"""The dependency rule of ``service/__init__.py``, checked on every import in the tree
(including the ones inside functions): a layer imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import service
from service import LAYERS

SERVICE = Path(service.__file__).parent


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def layer_of(module: str) -> str:
    """``service.streams.hub`` -> ``streams``; ``service.app`` -> ``app``."""
    return module.split(".")[1]


def modules() -> list[Path]:
    return sorted(path for path in SERVICE.rglob("*.py") if path.name != "__init__.py")


def test_every_module_is_in_a_layer() -> None:
    for path in modules():
        part = path.relative_to(SERVICE).parts[0].removesuffix(".py")
        assert part in LAYERS, f"{path}: add {part!r} to service.LAYERS"


@pytest.mark.parametrize("path", modules(), ids=lambda path: str(path.relative_to(SERVICE)))
def test_a_module_imports_only_what_its_layer_may(path: Path) -> None:
    layer = path.relative_to(SERVICE).parts[0].removesuffix(".py")
    allowed = LAYERS[layer]
    for name in imported_modules(path):
        top = name.split(".")[0]
        if top == "litestar":
            assert "litestar" in allowed, f"{path}: only the HTTP side imports Litestar"
        elif top == "google":
            assert path.name == "gemini.py", f"{path}: only the Gemini provider imports google"
        elif top == "openai":
            assert path.name == "openai.py", f"{path}: only the OpenAI provider imports openai"
        elif top == "service" and "." in name:
            target = layer_of(name)
            if target in LAYERS and target != layer:
                assert target in allowed, f"{path} imports {name}: {layer} may not use {target}"
