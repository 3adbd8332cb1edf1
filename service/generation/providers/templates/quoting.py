"""User text made safe to write into the generated files.

Descriptions and field names come from the user's spec and land in Python, TOML and Markdown.
Each helper here writes a literal that means exactly the user's text in its language (quotes,
backslashes, newlines, control characters and non-ASCII included), so the generated file parses
and says what the user wrote. Every file also travels inside the answer format's file blocks
(``generation/parsing.py``), so no helper ever lets ``<<<`` through: ``<`` is escaped wherever
the text holds ``<<<``, and a file can never contain a block marker.
"""

from __future__ import annotations

import html


def py_str(text: str) -> str:
    """A Python string literal of any text; ``<`` escaped where the text has ``<<<`` so a file
    never contains the answer format's markers."""
    literal = repr(text)
    return literal.replace("<", "\\x3c") if "<<<" in literal else literal


def docstring(text: str, indent: str = "") -> str:
    """A docstring statement for any text: triple-quoted when that reads as the text itself,
    else a plain literal, since a backslash, a triple quote, a closing double quote, an
    unprintable character or ``<<<`` would change or end a triple-quoted string."""
    plain = (
        all(char == "\n" or char.isprintable() for char in text)
        and "\\" not in text
        and '"""' not in text
        and not text.endswith('"')
        and "<<<" not in text
    )
    if not plain:
        return indent + py_str(text)
    lines = text.split("\n")
    body = "\n".join([lines[0]] + [indent + line if line else "" for line in lines[1:]])
    closing = f"\n{indent}" if len(lines) > 1 else ""
    return f'{indent}"""{body}{closing}"""'


def toml_str(text: str) -> str:
    """A TOML basic string of any text; TOML has no ``\\x`` escape, so control characters and
    the ``<`` of ``<<<`` become ``\\u`` escapes, and a lone surrogate (not writable as UTF-8)
    becomes U+FFFD."""
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F or (char == "<" and "<<<" in text):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def markdown_text(text: str) -> str:
    """Text for a Markdown paragraph: HTML-escaped, so a tag shows as written and ``<<<``
    becomes ``&lt;&lt;&lt;``; a lone surrogate becomes ``?`` since the file is UTF-8."""
    return html.escape(text.encode("utf-8", "replace").decode("utf-8"), quote=False)
