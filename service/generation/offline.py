"""A deterministic offline generator: no network, no key, a few real files per phase.

It exists so a generation runs end to end out of the box and the stream is exercised for real;
the phased LLM generator replaces its templates with a provider's output.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from service.events import EventType, NewEvent, NewFile
from service.generation.emitter import Emitter
from service.spec import Entity, Spec, module_name, referenced_entity

CHUNK_CHARS = 400

_PY_TYPES = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "datetime": "datetime",
    "uuid": "UUID",
}


@dataclass(frozen=True, slots=True)
class Phase:
    stage: str
    title: str
    files: tuple[NewFile, ...]


def _model(entity: Entity) -> str:
    lines = [
        "from __future__ import annotations",
        "",
        "from datetime import datetime",
        "from uuid import UUID",
        "",
        "from pydantic import BaseModel",
        "",
        "",
        f"class {entity.name}(BaseModel):",
        f"    {(entity.description or entity.name)!r}",  # repr: any text is a valid docstring
        "",
        "    id: UUID",
    ]
    for field, type_name in entity.fields.items():
        target = referenced_entity(type_name)
        lines.append(f"    {field}: {'UUID' if target else _PY_TYPES[type_name]}")
    return "\n".join(lines) + "\n"


def _routes(entity: Entity) -> str:
    module, plural = module_name(entity.name), module_name(entity.name) + "s"
    return (
        "from uuid import UUID\n\n"
        "from fastapi import APIRouter, HTTPException\n\n"
        f"from app.models.{module} import {entity.name}\n\n"
        f'router = APIRouter(prefix="/{plural}")\n'
        f"_rows: dict[UUID, {entity.name}] = {{}}\n\n\n"
        f'@router.post("", status_code=201)\n'
        f"def create(item: {entity.name}) -> {entity.name}:\n"
        "    _rows[item.id] = item\n    return item\n\n\n"
        f'@router.get("/{{item_id}}")\n'
        f"def read(item_id: UUID) -> {entity.name}:\n"
        "    if item_id not in _rows:\n"
        "        raise HTTPException(404)\n"
        "    return _rows[item_id]\n"
    )


def plan(spec: Spec) -> list[Phase]:
    entities = spec.entities
    core = (
        NewFile("app/settings.py", f'PROJECT = "{spec.project}"\n', "python"),
        NewFile(
            "app/main.py",
            "from fastapi import FastAPI\n\n"
            + "".join(f"from app.api import {module_name(e.name)}\n" for e in entities)
            + f'\napp = FastAPI(title="{spec.project}")\n'
            + "".join(f"app.include_router({module_name(e.name)}.router)\n" for e in entities),
            "python",
        ),
    )
    models = tuple(
        NewFile(f"app/models/{module_name(e.name)}.py", _model(e), "python") for e in entities
    )
    api = tuple(
        NewFile(f"app/api/{module_name(e.name)}.py", _routes(e), "python") for e in entities
    )
    tests = tuple(
        NewFile(
            f"tests/test_{module_name(e.name)}.py",
            f"from app.models.{module_name(e.name)} import {e.name}\n\n\n"
            f"def test_{module_name(e.name)}_has_fields() -> None:\n"
            f"    assert set({e.name}.model_fields) >= {set(e.fields)!r}\n",
            "python",
        )
        for e in entities
    )
    return [
        Phase("core", "Core infrastructure", core),
        Phase("models", "Models", models),
        Phase("api", "API routes", api),
        Phase("tests", "Tests", tests),
    ]


async def generate(spec: Spec, emitter: Emitter, *, delay_s: float = 0.0) -> None:
    """Emit the phases of an offline generation; the caller emits started and terminal events."""
    phases = plan(spec)
    total = sum(len(phase.files) for phase in phases)
    done = 0

    def progress() -> float:
        return round(0.05 + 0.9 * done / total, 4)

    for number, phase in enumerate(phases, start=1):
        await emitter.emit(
            NewEvent(
                EventType.PHASE_STARTED,
                phase.stage,
                progress(),
                f"Phase {number} of {len(phases)}: {phase.title}",
                {"phase": phase.stage, "number": number, "files": len(phase.files)},
            )
        )
        for file in phase.files:
            for start in range(0, len(file.content), CHUNK_CHARS):
                await asyncio.sleep(delay_s)
                text = file.content[start : start + CHUNK_CHARS]
                await emitter.emit(
                    NewEvent(
                        EventType.LLM_DELTA,
                        phase.stage,
                        progress(),
                        f"Writing {file.path}",
                        {"phase": phase.stage, "text": text},
                    )
                )
            done += 1
            await emitter.emit(file.saved(phase.stage, progress()), files=[file])
        await emitter.emit(
            NewEvent(
                EventType.PHASE_COMPLETED,
                phase.stage,
                progress(),
                f"{phase.title} done",
                {"phase": phase.stage, "files": len(phase.files)},
            )
        )
