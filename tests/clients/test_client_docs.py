"""The client's README and its two faces agree: every method the README lists exists on
``AsyncGenstream`` and on ``Genstream`` with the same parameters, and its examples parse."""

from __future__ import annotations

import ast
import inspect
import re

import pytest
from genstream_client import AsyncGenstream, Genstream

from service.settings import PROJECT_ROOT

README = (PROJECT_ROOT / "clients" / "python" / "README.md").read_text()


def public_methods(cls: type) -> set[str]:
    return {
        name
        for name, member in vars(cls).items()
        if callable(member) and not name.startswith("_") and name not in {"aclose", "close"}
    }


def test_the_sync_client_has_every_method_of_the_async_one_with_the_same_parameters() -> None:
    assert public_methods(Genstream) == public_methods(AsyncGenstream) - {"request", "url"}
    for name in public_methods(Genstream):
        ours = inspect.signature(getattr(Genstream, name)).parameters
        theirs = inspect.signature(getattr(AsyncGenstream, name)).parameters
        assert list(ours) == list(theirs), name
        assert [p.default for p in ours.values()] == [p.default for p in theirs.values()], name


def test_every_method_in_the_readme_table_exists() -> None:
    listed = set(re.findall(r"^\| `([a-z_]+)\(", README, flags=re.MULTILINE))
    assert listed == public_methods(Genstream)


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL))
def test_each_example_parses(block: str) -> None:
    ast.parse(block)
