from __future__ import annotations

import re

from service import errors
from service.app import STATUS_OF

# A line of the drawn tree: the branch drawing, the class name, its description, its status.
TREE_LINE = re.compile(r"^(?P<indent>[│├└─ ]*)(?P<name>\w+)(?:\s.*?)?(?:->\s*(?P<status>\d{3}))?$")


def drawn_tree() -> list[tuple[int, str, int | None]]:
    """(depth, class name, status) for each line of the tree in errors.py's docstring."""
    assert errors.__doc__ is not None
    _, _, tree = errors.__doc__.partition("\n\n")
    lines = []
    for line in tree.strip().splitlines():
        match = TREE_LINE.match(line)
        assert match, f"not a tree line: {line!r}"
        status = match["status"]
        lines.append((len(match["indent"]) // 4, match["name"], int(status) if status else None))
    return lines


def error_classes() -> set[str]:
    """Every error class errors.py defines (its base included)."""
    return {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, errors.GenstreamError)
        and value.__module__ == errors.__name__
    }


def mapped_status(cls: type[errors.GenstreamError]) -> int:
    """The status app.py answers with for an error of this class (its first matching entry)."""
    return next(code for base, code in STATUS_OF.items() if issubclass(cls, base))


def test_the_drawn_tree_is_the_class_tree() -> None:
    parents: list[str] = []
    drawn: set[str] = set()
    for depth, name, _ in drawn_tree():
        cls = getattr(errors, name)
        del parents[depth:]
        if parents:
            assert cls.__bases__ == (getattr(errors, parents[-1]),), name
        parents.append(name)
        drawn.add(name)
    assert drawn == error_classes()


def test_each_drawn_status_is_the_one_app_maps_the_class_to() -> None:
    for _, name, status in drawn_tree():
        if name != "GenstreamError":
            assert status == mapped_status(getattr(errors, name)), name
