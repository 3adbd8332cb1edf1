"""The offline provider's templates: every file of a runnable Litestar + pydantic project.

The generated project is a JSON API with one controller per entity over an in-process store
(no database server), plus its own pytest suite; it needs only litestar, pydantic, pytest and
httpx. Everything is a pure function of the spec, so the same spec gives byte-identical files.

One module per part of the project it writes, each a set of functions from the plan to a file's
text (``offline.py`` decides which file goes in which phase):

- ``plan``: the names every template agrees on (attributes, row ids, nullable references),
  decided once from the spec; the naming rules live there.
- ``quoting``: user text as Python, TOML and Markdown literals that never hold a block marker.
- ``layout``: the generated code's line length and the lines that wrap.
- ``project``: ``pyproject.toml`` and ``README.md``.
- ``app``: ``app/__init__.py``, ``app/settings.py``, ``app/database.py``, ``app/main.py``.
- ``models``: ``app/models/``; ``api``: ``app/api/``.
- ``fixtures``: ``tests/__init__.py``, ``tests/conftest.py``, ``tests/factories.py``;
  ``suite``: ``tests/test_app.py`` and ``tests/test_<entity>.py``.

Every template writes its file as a list of lines, joined by ``layout.source``, and never as
one f-string block. The generated code is full of braces (dict literals, f-strings of its own,
``{row_id}`` in paths), which a block f-string must double, so a reader of a block cannot tell
the template's braces from the file's; in a list only the ``f``-prefixed lines interpolate, and
every other line is the file's text exactly. Optional parts (an import, the reference checks, a
test per reference) are plain ``if``/``+=``/``*(...)`` instead of pre-rendered fragments spliced
into a block with their newlines counted by hand. The price is quotes on each line, and a
generated line near 100 columns written as two string parts in parentheses.
"""
