"""How the generated Python is laid out: its line length, and the few lines that wrap.

Every template builds its file as a list of lines (the package docstring says why) and joins
them with ``source``. The generated code keeps to 100 columns where a line's length depends on
the user's names and wrapping is simple: a def (``wrap_def``), an ``__all__`` (``all_list``) and
a payload item (in ``fixtures``). A name longer than a line stays long; it still compiles.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from service.generation.providers.templates.quoting import py_str

LINE = 100  # the generated code's line length


def source(lines: Iterable[str]) -> str:
    """A file's text from its lines, each ended by a newline (as every text file should be)."""
    return "\n".join(lines) + "\n"


def wrap_def(name: str, params: str, returns: str) -> list[str]:
    """A def line, its parameters on their own line when it would be too long."""
    line = f"def {name}({params}) -> {returns}:"
    if len(line) <= LINE:
        return [line]
    return [f"def {name}(", f"    {params},", f") -> {returns}:"]


def all_list(names: Iterable[str]) -> list[str]:
    """An ``__all__`` statement, one name a line when they do not fit on one."""
    literals = [py_str(name) for name in names]
    line = f"__all__ = [{', '.join(literals)}]"
    if len(line) <= LINE:
        return [line]
    return ["__all__ = [", *(f"    {literal}," for literal in literals), "]"]


def package_init(docstring: str, package: str, modules: Sequence[str]) -> str:
    """A package's ``__init__.py`` that imports its modules and lists them in ``__all__``."""
    lines = [
        f'"""{docstring}"""',
        "",
        *(f"from {package} import {module}" for module in modules),
        "",
        *all_list(modules),
    ]
    return source(lines)
