"""Write ``genstream_client/events.py`` from the service's event vocabulary.

    .venv/bin/python clients/python/generate.py          # rewrite the file
    .venv/bin/python clients/python/generate.py --check  # exit 1 if it is out of date

The vocabulary lives once, in ``service/events.py``: ``EventType``, ``Status``,
``TERMINAL_TYPES`` and ``EVENT_DATA`` (one TypedDict per type's ``data``). This script reads
them as Python objects (``typing.get_type_hints`` and the TypedDicts' required and optional
keys; the attribute docstrings from their source) and writes them out as plain source the
client imports with no dependency on the service. The client never imports this script;
``tests/clients/test_generated_events.py`` fails when the committed file differs from what it
writes now.
"""

from __future__ import annotations

import ast
import inspect
import json
import sys
import textwrap
import types
import typing
from collections.abc import Iterator, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import typing_extensions

from service import events

TARGET = Path(__file__).resolve().parent / "genstream_client" / "events.py"
COMMAND = "python clients/python/generate.py"

HEADER = f'''"""genstream's event vocabulary: the types, the statuses, and each type's ``data``.

GENERATED from the service's ``service/events.py`` by ``clients/python/generate.py``: do not
edit. After a change to the vocabulary, run ``{COMMAND}``.

Readers must ignore keys of ``data`` they do not know, and events of types they do not know
(a newer server): a key may be added to a type's data; none is removed or changes meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal, NotRequired, TypedDict
'''


def annotation(hint: Any) -> str:
    """A type hint as source text: the few forms event data uses."""
    if hint is type(None):
        return "None"
    if hint is Any:
        return "Any"
    if isinstance(hint, type) and hint in (str, int, float, bool):
        return hint.__name__
    if typing_extensions.is_typeddict(hint):
        return str(hint.__name__)  # written out before the class that names it (``ordered``)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return f"Literal[{', '.join(json.dumps(arg) for arg in args)}]"
    if origin in (types.UnionType, typing.Union):
        return " | ".join(annotation(arg) for arg in args)
    if origin in (list, dict, tuple):
        return f"{origin.__name__}[{', '.join(annotation(arg) for arg in args)}]"
    raise TypeError(f"event data may hold only JSON types; teach generate.py {hint!r}")


def attribute_docstrings(cls: type) -> dict[str, str]:
    """``name: type`` followed by a string literal: that string, by name."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0]
    assert isinstance(body, ast.ClassDef)
    found: dict[str, str] = {}
    for statement, following in zip(body.body, body.body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            found[statement.target.id] = following.value.value
    return found


def enum(cls: type[StrEnum], doc: str) -> Iterator[str]:
    yield f"\n\nclass {cls.__name__}(StrEnum):"
    yield f'    """{doc}"""\n'
    for member in cls:
        yield f"    {member.name} = {json.dumps(member.value)}"


def fields(cls: type[Mapping[str, Any]]) -> Iterator[tuple[str, Any, bool]]:
    """Each key of a TypedDict: its name, its type, and whether it may be missing.

    ``__optional_keys__`` alone is not enough: on Python 3.11 a TypedDict defined under
    ``from __future__ import annotations`` (as ``service/events.py`` is) sees ``NotRequired``
    only as text and reports every key required. The hints with their extras say it."""
    optional_keys: frozenset[str] = getattr(cls, "__optional_keys__", frozenset())
    total: bool = getattr(cls, "__total__", True)
    for name, hint in typing.get_type_hints(cls, include_extras=True).items():
        qualifier = typing.get_origin(hint)
        if qualifier in (typing.NotRequired, typing.Required):
            (inner,) = typing.get_args(hint)
            yield name, inner, qualifier is typing.NotRequired
        else:
            yield name, hint, name in optional_keys or not total


def ordered(classes: list[type[Mapping[str, Any]]]) -> list[type[Mapping[str, Any]]]:
    """The TypedDicts and those their keys name, each after the ones it names."""
    done: dict[type[Mapping[str, Any]], None] = {}

    def visit(cls: type[Mapping[str, Any]]) -> None:
        if cls in done:
            return
        for _, hint, _ in fields(cls):
            for part in (hint, *_nested_args(hint)):
                if typing_extensions.is_typeddict(part):
                    visit(part)
        done[cls] = None

    for cls in classes:
        visit(cls)
    return list(done)


def _nested_args(hint: Any) -> Iterator[Any]:
    for arg in typing.get_args(hint):
        yield arg
        yield from _nested_args(arg)


def typed_dict(cls: type[Mapping[str, Any]]) -> Iterator[str]:
    keys = list(fields(cls))
    docs = attribute_docstrings(cls)
    yield f"\n\nclass {cls.__name__}(TypedDict):"
    if cls.__doc__:
        lines = inspect.cleandoc(cls.__doc__).splitlines()
        doc = "\n".join([lines[0], *(f"    {line}" if line else "" for line in lines[1:])])
        yield f'    """{doc}"""'
        if keys:
            yield ""
    for name, hint, optional in keys:
        text = annotation(hint)
        yield f"    {name}: {f'NotRequired[{text}]' if optional else text}"
        if name in docs:
            yield f'    """{docs[name]}"""'
    if not keys and not cls.__doc__:
        yield "    pass"


def members(name: str, cls: type[StrEnum], chosen: frozenset[Any]) -> str:
    """``    {Name.A, Name.B}``, in the enum's order."""
    return "    {" + ", ".join(f"{name}.{m.name}" for m in cls if m in chosen) + "}"


def render() -> str:
    """The text of ``genstream_client/events.py`` for the vocabulary as it is now."""
    missing = set(events.EventType) - set(events.EVENT_DATA)
    if missing:
        raise ValueError(f"EVENT_DATA has no entry for {sorted(missing)}")
    lines = [HEADER.rstrip("\n")]
    lines += enum(events.EventType, "The type of an event (its ``type``).")
    lines += enum(events.Status, "A generation's status (an event's ``status``).")
    lines.append("\n\nTERMINAL_TYPES: frozenset[EventType] = frozenset(")
    lines.append(members("EventType", events.EventType, events.TERMINAL_TYPES))
    lines.append(")")
    lines.append('"""The types that end a generation\'s log: exactly one of them comes last."""')
    lines.append("TERMINAL_STATUSES: frozenset[Status] = frozenset(")
    lines.append(members("Status", events.Status, events.TERMINAL_STATUSES))
    lines.append(")")
    classes = ordered(list(dict.fromkeys(events.EVENT_DATA.values())))
    for cls in classes:
        lines += typed_dict(cls)
    lines.append("\n\nEVENT_DATA: Mapping[EventType, type[Mapping[str, Any]]] = {")
    for event_type in events.EventType:
        lines.append(f"    EventType.{event_type.name}: {events.EVENT_DATA[event_type].__name__},")
    lines.append("}")
    lines.append('"""What each type\'s ``data`` holds."""')
    return "\n".join(lines) + "\n"


def main(argv: list[str], target: Path = TARGET) -> int:
    text = render()
    if argv == ["--check"]:
        if not target.exists() or target.read_text() != text:
            print(f"{target} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        return 0
    if argv:
        print(f"usage: {COMMAND} [--check]", file=sys.stderr)
        return 2
    target.write_text(text)
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
