"""What genstream stores as a generated file, wherever the file comes from: a model's answer
(``generation/parsing.py``) or an import (``operations/validation.py``). One rule for both,
so that an imported file can be nothing a generated one could not be: stored, served by
``GET …/files/{path}`` and written into the zip under a name the archive may safely hold.
"""

from __future__ import annotations

import posixpath
import re

MAX_PATH_CHARS = 200
MAX_FILE_BYTES = 200_000

# Every segment starts with a letter, digit or '_': no hidden files (.git/config, .env) and
# nothing a shell could read as an option (-rf), at any depth.
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")  # matched whole: fullmatch

LANGUAGES = {
    ".py": "python",
    ".toml": "toml",
    ".md": "markdown",
    ".txt": "text",
    ".json": "json",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".ini": "ini",
    ".cfg": "ini",
    ".sql": "sql",
    ".sh": "shell",
}
LANGUAGE_NAMES = frozenset(LANGUAGES.values()) | {"text"}


class FileRefused(ValueError):
    """A path or a content genstream does not store; the message says why, in words."""


def language_of(path: str) -> str:
    return LANGUAGES.get(posixpath.splitext(path)[1].lower(), "text")


def check_path(path: str) -> str:
    """The path, unchanged, or FileRefused saying why it is refused."""
    if not path or len(path) > MAX_PATH_CHARS:
        raise FileRefused(f"file path {path[:50]!r} is empty or longer than {MAX_PATH_CHARS}")
    if path.startswith("/") or "\\" in path:
        raise FileRefused(f"file path {path!r} must be relative, with forward slashes")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise FileRefused(f"file path {path!r} has an empty, '.' or '..' segment")
    if not all(_SEGMENT.fullmatch(part) for part in parts):
        raise FileRefused(
            f"file path {path!r} may only use letters, digits, '_', '-', '.' and '/', and each "
            "segment must start with a letter, digit or '_'"
        )
    return path


def check_content(path: str, content: str) -> None:
    """FileRefused if ``content`` is not something a file may hold: a NUL (PostgreSQL's text
    cannot), or more than MAX_FILE_BYTES bytes of UTF-8."""
    if "\x00" in content:
        raise FileRefused(f"file {path!r} contains a NUL character")
    if len(content.encode()) > MAX_FILE_BYTES:
        raise FileRefused(f"file {path!r} is larger than {MAX_FILE_BYTES} bytes")
