"""The answer format every provider speaks, and its strict parser.

Each file is a block::

    <<<FILE app/models/user.py>>>
    ...the file's content, verbatim...
    <<<END FILE>>>

Text outside blocks is ignored (models like to add a sentence). Paths are checked before
anything is stored: relative, no ``..``, a conservative character set, bounded length; the
number of files and each file's size are bounded too.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from service.events import NewFile

OPEN = "<<<FILE "
CLOSE = "<<<END FILE>>>"
MAX_FILES = 60
MAX_FILE_BYTES = 200_000
MAX_PATH_CHARS = 200

_BLOCK = re.compile(
    r"^<<<FILE (?P<path>[^\r\n>]*)>>>[ \t\r]*\n(?P<body>.*?)^<<<END FILE>>>[ \t\r]*$",
    re.M | re.S,
)
_OPEN_LINE = re.compile(r"^<<<FILE ", re.M)
_CLOSE_LINE = re.compile(r"^<<<END FILE>>>", re.M)
# Every segment starts with a letter, digit or '_': no hidden files (.git/config, .env) and
# nothing a shell could read as an option (-rf), at any depth.
# Matched whole (fullmatch): with match() and `$`, "main.py\n" passed.
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")

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


class MalformedAnswer(ValueError):
    """The answer does not follow the format; the message says how, for the repair prompt."""


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    files: tuple[NewFile, ...]


def language_of(path: str) -> str:
    return LANGUAGES.get(posixpath.splitext(path)[1].lower(), "text")


def check_path(path: str) -> str:
    """The normalised path, or MalformedAnswer saying why it is refused."""
    if not path or len(path) > MAX_PATH_CHARS:
        raise MalformedAnswer(f"file path {path[:50]!r} is empty or longer than {MAX_PATH_CHARS}")
    if path.startswith("/") or "\\" in path:
        raise MalformedAnswer(f"file path {path!r} must be relative, with forward slashes")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise MalformedAnswer(f"file path {path!r} has an empty, '.' or '..' segment")
    if not all(_SEGMENT.fullmatch(part) for part in parts):
        raise MalformedAnswer(
            f"file path {path!r} may only use letters, digits, '_', '-', '.' and '/', and each "
            "segment must start with a letter, digit or '_'"
        )
    return path


def _check_layout(paths: list[str]) -> None:
    """Paths that would collide when the archive is unpacked: the same path in another case
    (case-insensitive file systems), or a file where another file needs a directory."""
    seen: dict[str, str] = {}
    for path in paths:
        if (other := seen.setdefault(path.casefold(), path)) != path:
            raise MalformedAnswer(
                f"files {other!r} and {path!r} differ only in case: the same file twice on "
                "case-insensitive file systems"
            )
    directories = {
        "/".join(path.split("/")[:i]) for path in paths for i in range(1, path.count("/") + 1)
    }
    for path in paths:
        if path in directories:
            raise MalformedAnswer(f"{path!r} is both a file and a directory of other files")


def parse_answer(text: str) -> ParsedAnswer:
    """Every file block of an answer; MalformedAnswer when there is none or one is broken."""
    files: dict[str, NewFile] = {}
    for match in _BLOCK.finditer(text):
        path = check_path(match["path"].strip())
        if path in files:
            raise MalformedAnswer(f"file {path!r} appears twice")
        content = match["body"]
        if "\x00" in content:
            raise MalformedAnswer(f"file {path!r} contains a NUL character")
        if len(content.encode()) > MAX_FILE_BYTES:
            raise MalformedAnswer(f"file {path!r} is larger than {MAX_FILE_BYTES} bytes")
        files[path] = NewFile(path, content, language_of(path))
        if len(files) > MAX_FILES:
            raise MalformedAnswer(f"more than {MAX_FILES} files in one answer")
    opened, closed = len(_OPEN_LINE.findall(text)), len(_CLOSE_LINE.findall(text))
    if opened != len(files) or closed != len(files):
        raise MalformedAnswer(
            f"found {opened} '{OPEN.strip()} <path>>>>' lines and {closed} '{CLOSE}' lines but "
            f"{len(files)} complete blocks: every file needs both, each on its own line"
        )
    _check_layout(list(files))
    if not files:
        raise MalformedAnswer(f"no file blocks: wrap every file in '{OPEN}<path>>>>' … '{CLOSE}'")
    return ParsedAnswer(tuple(files.values()))


def render_block(file: NewFile) -> str:
    """One file in the answer format (what the offline provider streams)."""
    body = file.content if file.content.endswith("\n") else file.content + "\n"
    return f"{OPEN}{file.path}>>>\n{body}{CLOSE}\n"
