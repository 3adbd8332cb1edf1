"""One line of an export, as an import reads it: one JSON object holding one row of one table
(``generation``, ``event`` or ``file``), and every column of the row of its type.

A value PostgreSQL could not store is refused here, in words, rather than by the database in
the middle of a transaction: a NUL or a lone surrogate in any text (a key, a payload's
innermost string), a number that is not finite, an integer beyond its column's range, a time
without its UTC offset. ``validation.py`` checks the generation these rows make up.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from service.errors import InvalidRequest
from service.events import EventType, Status
from service.files import LANGUAGE_NAMES

KINDS: Final = ("generation", "event", "file")
INT_MAX: Final = 2**31 - 1
BIGINT_MAX: Final = 2**63 - 1
MAX_INDEXED_CHARS: Final = 200


class Refused(InvalidRequest):
    """One generation is refused: the line at fault and why, in words."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Line:
    """One row of an export and the line it came on."""

    number: int
    row: dict[str, Any]


def shown(value: object, limit: int = 60) -> str:
    """A value as a message may quote it: repr (no control character reaches a terminal),
    cut to ``limit`` characters."""
    quoted = repr(value)
    return quoted if len(quoted) <= limit else quoted[: limit - 3] + "..."


# --- one line --------------------------------------------------------------------------------


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def _unstorable(value: object) -> str | None:
    """Why PostgreSQL could not store this JSON value, or None: a NUL or a lone surrogate in a
    string or key, or a number that is not finite. Walked without recursion."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                return f"the text {shown(item)} holds a NUL character"
            try:
                item.encode()
            except UnicodeEncodeError:
                return f"the text {shown(item)} is not valid Unicode (a lone surrogate)"
        elif isinstance(item, float) and not math.isfinite(item):
            return "a number too large to store"
    return None


def parse_line(number: int, raw: str | bytes) -> tuple[str, Line]:
    """A line's kind (generation, event or file) and row; Refused if it is not an export line."""
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError as exc:
        raise Refused(number, f"not UTF-8 text ({exc.reason})") from None
    try:
        record = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        raise Refused(number, f"not an export line: not JSON ({exc})") from None
    except RecursionError:
        raise Refused(number, "not an export line: JSON nested too deeply") from None
    if not isinstance(record, dict) or len(record) != 1:
        raise Refused(
            number, 'not an export line: expected {"generation" | "event" | "file": {...}}'
        )
    ((kind, row),) = record.items()
    if kind not in KINDS:
        raise Refused(number, f"not an export line: unknown kind {shown(kind)}")
    if not isinstance(row, dict):
        raise Refused(number, f"not an export line: the {kind} is not a JSON object")
    if (problem := _unstorable(row)) is not None:
        raise Refused(number, f"the {kind}: {problem}")
    return kind, Line(number, row)


# --- one column ------------------------------------------------------------------------------

Check = Callable[[Any], Any]


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{shown(value)} is not text")
    return value


def _name(value: Any) -> str:
    if not text(value).strip():
        raise ValueError("must not be blank")
    return str(value)


def _short(check: Check) -> Check:
    """Text an index holds, bounded well below a B-tree entry's limit (about 2.7 kB)."""

    def short(value: Any) -> Any:
        if len(checked := check(value)) > MAX_INDEXED_CHARS:
            raise ValueError(f"{shown(value)} is longer than {MAX_INDEXED_CHARS} characters")
        return checked

    return short


def _uuid(value: Any) -> str:
    try:
        return str(UUID(text(value)))
    except ValueError:
        raise ValueError(f"{shown(value)} is not a UUID") from None


def _time(value: Any) -> str:
    try:
        moment = datetime.fromisoformat(text(value))
    except ValueError:
        raise ValueError(f"{shown(value)} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise ValueError(f"{shown(value)} has no UTC offset")
    return moment.isoformat()


def _integer(low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"{shown(value)} is not an integer in [{low}, {high}]")
        return value

    return check


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{shown(value)} is not a number in [0, 1]")
    return float(value)


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{shown(value)} is not a JSON object")
    return value


def _chain(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"\\x[0-9a-f]{64}", value):
        raise ValueError(f"{shown(value)} is not a chain hash (\\x and 64 hex digits)")
    return value


def _one_of(allowed: frozenset[str], what: str) -> Check:
    def check(value: Any) -> str:
        if value not in allowed:
            raise ValueError(f"{shown(value)} is not {what}")
        return str(value)

    return check


def _optional(check: Check) -> Check:
    def optional(value: Any) -> Any:
        return None if value is None else check(value)

    return optional


KEPT_OWNER: Final = _short(_name)
_TYPES = frozenset(EventType)
_STATUSES = frozenset(Status)

# Each table's columns (exactly those of store/tables.py; a test keeps them in step).
GENERATION_COLUMNS: Final[Mapping[str, Check]] = {
    "id": _uuid,
    "owner": text,  # replaced, unless the import keeps the export's owners: then KEPT_OWNER
    "status": _one_of(_STATUSES, "a status"),
    "stage": text,
    "message": text,
    "progress": _fraction,
    "last_seq": _integer(0, BIGINT_MAX),
    "spec": _object,
    "provider": _name,
    "model": _optional(text),
    "error": _optional(text),
    "attempt": _integer(0, INT_MAX - 1),  # room for one more claim
    "claimed_by": _optional(text),
    "lease_expires_at": _optional(_time),
    "cancel_requested_at": _optional(_time),
    "created_at": _time,
    "started_at": _optional(_time),
    "finished_at": _optional(_time),
    "updated_at": _time,
    "trace_context": _optional(_object),
    "verify": _one_of(frozenset({"off", "compile", "tests"}), "a verify level"),
    "redacted_at": _optional(_time),
}
ADDED_LATER: Final[Mapping[str, Any]] = {
    "trace_context": None,
    "verify": "off",
    "chain": None,
    "redacted_at": None,
}
"""Columns an export made before they existed lacks, and what such a row gets: the value its
migration gave the rows already there (an event's chain: computed once its log is in)."""
EVENT_COLUMNS: Final[Mapping[str, Check]] = {
    "generation_id": _uuid,
    "seq": _integer(1, BIGINT_MAX),
    "type": _one_of(_TYPES, "an event type"),
    "status": _one_of(_STATUSES, "a status"),
    "stage": text,
    "progress": _fraction,
    "message": text,
    "payload": _object,
    "created_at": _time,
    "idempotency_key": _optional(_short(text)),
    "chain": _optional(_chain),
    "redacted_at": _optional(_time),
}
FILE_COLUMNS: Final[Mapping[str, Check]] = {
    "generation_id": _uuid,
    "path": text,  # checked by the files' rule, with the content
    "content": text,
    "size": _integer(0, INT_MAX),
    "sha256": text,
    "language": _one_of(LANGUAGE_NAMES, "a language"),
    "seq": _integer(1, BIGINT_MAX),
    "created_at": _time,
    "redacted_at": _optional(_time),
}


def columns(line: Line, what: str, checks: Mapping[str, Check]) -> dict[str, Any]:
    """The row's columns, each checked and in its canonical form; Refused at the first fault."""
    if missing := [name for name in checks if name not in line.row and name not in ADDED_LATER]:
        raise Refused(line.number, f"{what} has no {missing[0]!r}")
    if unknown := sorted(set(line.row) - set(checks)):
        raise Refused(line.number, f"{what} has an unknown column {shown(unknown[0])}")
    checked = {}
    for name, check in checks.items():
        try:
            checked[name] = check(line.row.get(name, ADDED_LATER.get(name)))
        except ValueError as exc:
            raise Refused(line.number, f"{what}'s {name}: {exc}") from None
    return checked
