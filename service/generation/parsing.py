"""The answer format every provider speaks, and its strict parser.

Each file is a block::

    <<<FILE app/models/user.py>>>
    ...the file's content, verbatim...
    <<<END FILE>>>

Text outside blocks is ignored (models like to add a sentence). Paths and contents are checked
before anything is stored, by the rule every stored file obeys (``service/files.py``):
relative, no ``..``, a conservative character set, bounded length, bounded size; the number of
files in one answer is bounded too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from service.events import NewFile
from service.files import FileRefused, check_content, language_of
from service.files import check_path as check_file_path

OPEN = "<<<FILE "
CLOSE = "<<<END FILE>>>"
MAX_FILES = 60

_BLOCK = re.compile(
    r"^<<<FILE (?P<path>[^\r\n>]*)>>>[ \t\r]*\n(?P<body>.*?)^<<<END FILE>>>[ \t\r]*$",
    re.M | re.S,
)
_OPEN_LINE = re.compile(r"^<<<FILE ", re.M)
_CLOSE_LINE = re.compile(r"^<<<END FILE>>>", re.M)


class MalformedAnswer(ValueError):
    """The answer does not follow the format; the message says how, for the repair prompt."""


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    files: tuple[NewFile, ...]


def check_path(path: str) -> str:
    """The path, or MalformedAnswer saying why it is refused (the rule is ``service/files.py``'s,
    which imports obey too)."""
    try:
        return check_file_path(path)
    except FileRefused as refused:
        raise MalformedAnswer(str(refused)) from None


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
        try:
            check_content(path, content)
        except FileRefused as refused:
            raise MalformedAnswer(str(refused)) from None
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
