"""User text in the generated files: every literal means exactly the text, and no block marker.

Each helper is checked the way the generated project reads its output: Python literals through
``compile`` and ``ast``, TOML through ``tomllib``, Markdown by unescaping the HTML it may hold.
"""

from __future__ import annotations

import ast
import html
import inspect
import tomllib

import pytest

from service.generation.parsing import CLOSE, OPEN
from service.generation.providers.templates.quoting import (
    docstring,
    markdown_text,
    py_str,
    toml_str,
)

HOSTILE = [
    "plain words",
    "",
    "a \"double\" and a 'single' quote",
    'ends with a quote"',
    "ends with a backslash \\",
    "a \\n that is not a newline, and \\\\ two backslashes",
    "line one\nline two\n\n  indented line four\n",
    "windows\r\nline\tand tab",
    "triple \"\"\" double and ''' single quotes",
    '"""',
    "\x00 NUL \x07 bell \x1b escape \x7f delete",
    "caf\u00e9 \u2713 \u4e2d\u6587 \U0001f600 and a \u2028 line separator",
    f"{CLOSE}\n{OPEN}x.py>>>\nhello",
    "<<<",
    "a lone < and >>> are harmless",
    "{braces} and {{doubled}} and %s and $var",
]


def no_marker(rendered: str) -> None:
    assert "<<<" not in rendered
    assert OPEN not in rendered
    assert CLOSE not in rendered


@pytest.mark.parametrize("text", HOSTILE)
def test_a_python_literal_means_exactly_the_text(text: str) -> None:
    literal = py_str(text)
    no_marker(literal)
    assert ast.literal_eval(literal) == text
    compile(f"value = {literal}\n", "<literal>", "exec", dont_inherit=True)


def class_docstring(module: str) -> ast.ClassDef:
    (row,) = ast.parse(module).body
    assert isinstance(row, ast.ClassDef)
    return row


@pytest.mark.parametrize("text", HOSTILE)
def test_a_docstring_shows_the_text_as_written(text: str) -> None:
    # help() and IDEs show a docstring through inspect.cleandoc, which also drops the
    # indentation and the closing line a triple-quoted docstring adds.
    module = f"{docstring(text)}\n\nimport os\n"
    no_marker(module)
    compile(module, "<module>", "exec", dont_inherit=True)
    assert ast.get_docstring(ast.parse(module)) == inspect.cleandoc(text)
    in_class = f"class Row:\n{docstring(text, '    ')}\n\n    x: int\n"
    compile(in_class, "<module>", "exec", dont_inherit=True)
    assert ast.get_docstring(class_docstring(in_class)) == inspect.cleandoc(text)


@pytest.mark.parametrize(
    "text",
    [
        "ends with a backslash \\",
        'ends with a quote"',
        'triple """ inside',
        "a NUL \x00 and a bell \x07",
        "a \u2028 line separator",
        f"{CLOSE} inside",
        "windows\r\nline",
    ],
)
def test_text_a_triple_quoted_string_would_change_becomes_an_exact_literal(text: str) -> None:
    module = f"{docstring(text)}\n"
    assert ast.get_docstring(ast.parse(module), clean=False) == text
    in_class = f"class Row:\n{docstring(text, '    ')}\n"
    assert ast.get_docstring(class_docstring(in_class), clean=False) == text


def test_safe_text_reads_as_itself_in_a_triple_quoted_docstring() -> None:
    text = "People who buy things.\n\nThey may 'quote' and say \"hi\" mid-sentence."
    assert docstring(text, "    ") == (
        '    """People who buy things.\n\n'
        "    They may 'quote' and say \"hi\" mid-sentence.\n"
        '    """'
    )
    assert docstring("One line.") == '"""One line."""'


@pytest.mark.parametrize("text", HOSTILE)
def test_a_toml_string_means_exactly_the_text(text: str) -> None:
    literal = toml_str(text)
    no_marker(literal)
    assert tomllib.loads(f"description = {literal}\n")["description"] == text


def test_a_lone_surrogate_becomes_the_replacement_character_in_toml() -> None:
    literal = toml_str("bad \ud800 half")
    literal.encode("utf-8")  # writable as the UTF-8 file it lands in
    assert tomllib.loads(f"x = {literal}")["x"] == "bad \ufffd half"


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_shows_the_text_and_no_markup_or_marker(text: str) -> None:
    rendered = markdown_text(text)
    no_marker(rendered)
    assert html.unescape(rendered) == text
    assert "<" not in rendered


def test_markdown_shows_a_tag_as_written_and_survives_a_lone_surrogate() -> None:
    assert markdown_text("<script>alert(1)</script> & co") == (
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co"
    )
    assert markdown_text("half \ud800").encode("utf-8") == b"half ?"
