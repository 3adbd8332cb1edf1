"""What an import checks about one generation before it writes any of it.

An export is untrusted input: another genstream's, an older one's, a backup edited by hand, or
an attacker's. A generation is let in only if this genstream could have written it itself:

* Every line is one JSON object holding one row, and every row has exactly its table's columns,
  each of its type: text without NUL (PostgreSQL cannot store one), UUIDs, ISO 8601 times with
  their offset, finite numbers within the column's range.
* Its events are numbered exactly 1..N in the order they come. Every type is one of the
  vocabulary's (a type goes verbatim into the stream's ``event:`` line, so a type holding a
  line break would forge frames), each event's status is the one its type implies, and a
  terminal event is the last, or followed by a ``generation.retried`` (a retried run's next
  attempt). No terminal event means a run exported while
  running: it arrives unclaimed and a worker here resumes it.
* Its row says what its log says (the rules of ``store/projections.py``, which ``rebuild
  --check`` applies): status, stage, progress and message of the last event, ``last_seq``,
  the error of its last attempt's ``generation.failed``, started and finished exactly when
  the log says so.
  A row that says running over a log that has ended would be claimed and end twice; a
  ``last_seq`` behind the log would make every append fail and the run be claimed for ever.
* Its files pass the rule generated files pass (``service/files.py``: no absolute path, no
  ``..``, no hidden or option-like segment, bounded size), their size and SHA-256 are their
  content's, each one's ``seq`` is the last ``file.saved`` event naming it, and every file a
  ``file.saved`` event names is there.

The checks return canonical rows rendered from the checked values (only the known columns;
the claim and lease cleared; the owner replaced when the import names one), so what the
import writes is exactly what was checked.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from service.events import TERMINAL_TYPES, EventType, Status, status_after
from service.files import FileRefused, check_content, check_path
from service.operations.rows import (
    EVENT_COLUMNS,
    FILE_COLUMNS,
    GENERATION_COLUMNS,
    INT_MAX,
    KEPT_OWNER,
    Line,
    Refused,
    columns,
    shown,
    text,
)


@dataclass(frozen=True, slots=True)
class Checked:
    """A generation that passed every check, as the JSON of the rows to write."""

    id: UUID
    row: str
    events: list[str]
    files: list[str]


# --- one generation --------------------------------------------------------------------------


def check_generation(
    generation: Line, events: Sequence[Line], files: Sequence[Line], owner: str | None
) -> Checked:
    """The rows to write for this generation; Refused (the first fault) if any check fails.
    ``owner``: every generation's new owner, or None to keep the export's."""
    row = columns(generation, "the generation", GENERATION_COLUMNS)
    log = [_event(line, row["id"]) for line in events]
    _check_log(events, log)
    _check_projection(generation, row, log)
    stored = _check_files(files, events, log, row["id"])
    if owner is None:
        try:
            KEPT_OWNER(row["owner"])
        except ValueError as exc:
            raise Refused(generation.number, f"the generation's owner: {exc}") from None
    else:
        row["owner"] = owner
    row["claimed_by"] = row["lease_expires_at"] = None  # arrives unclaimed
    return Checked(UUID(row["id"]), _json(row), [_json(e) for e in log], [_json(f) for f in stored])


def _json(row: Mapping[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def _event(line: Line, generation_id: str) -> dict[str, Any]:
    seq = line.row.get("seq")
    event = columns(line, f"event seq {shown(seq)}", EVENT_COLUMNS)
    if event["generation_id"] != generation_id:
        raise Refused(line.number, f"event seq {seq} belongs to {event['generation_id']}")
    return event


def _check_log(lines: Sequence[Line], log: Sequence[dict[str, Any]]) -> None:
    """Seqs exactly 1..N, statuses as their types imply, nothing after a terminal event but a
    generation.retried (which follows a failed or cancelled one, and goes on to the next)."""
    terminal: dict[str, Any] | None = None
    keys: dict[str, int] = {}
    for expected, (line, event) in enumerate(zip(lines, log, strict=True), start=1):
        seq, kind, at = event["seq"], event["type"], line.number
        if seq != expected:
            raise Refused(at, f"event seq {seq} where seq {expected} was expected (seqs are 1..N)")
        retry = kind == EventType.RETRIED
        if retry and (terminal is None or terminal["type"] == EventType.SUCCEEDED):
            raise Refused(
                at,
                f"event seq {seq} (generation.retried) must follow a generation.failed or "
                "generation.cancelled directly",
            )
        if terminal is not None and not retry:
            what = "a second terminal event" if kind in TERMINAL_TYPES else "an event"
            raise Refused(
                at,
                f"event seq {seq} ({kind}) is {what} after the terminal event at seq "
                f"{terminal['seq']} ({terminal['type']}): nothing may follow it",
            )
        terminal = None if retry else terminal
        if event["status"] != (implied := status_after(EventType(kind)).value):
            raise Refused(
                at, f"event seq {seq}: status {event['status']!r}, but {kind} means {implied!r}"
            )
        if (key := event["idempotency_key"]) is not None:
            if key in keys:
                raise Refused(
                    at, f"event seq {seq}: idempotency key {shown(key)} is seq {keys[key]}'s"
                )
            keys[key] = seq
        payload = event["payload"]
        if kind == EventType.FAILED and not isinstance(payload.get("error"), str | None):
            raise Refused(at, f"event seq {seq}: a generation.failed's data.error must be text")
        attempt = payload.get("attempt")
        if retry and (type(attempt) is not int or not 0 <= attempt <= INT_MAX):
            # The next attempt's budget of claims counts from it (store/event_log.py).
            raise Refused(
                at,
                f"event seq {seq}: a generation.retried's data.attempt must be an "
                f"integer from 0 to {INT_MAX}",
            )
        if kind == EventType.FILE_SAVED:
            try:
                check_path(text(payload.get("path")))
            except ValueError as exc:  # FileRefused is one
                raise Refused(at, f"event seq {seq} (file.saved): {exc}") from None
        if kind in TERMINAL_TYPES:
            terminal = event


def _check_projection(
    generation: Line, row: Mapping[str, Any], log: Sequence[dict[str, Any]]
) -> None:
    """The row says what its log says: ``store/projections.py``'s REBUILT, in Python."""
    last = log[-1] if log else None
    failures = [e for e in log if e["type"] in (EventType.FAILED, EventType.RETRIED)]
    expected: dict[str, Any] = {
        "status": last["status"] if last else Status.QUEUED.value,
        "stage": last["stage"] if last else "queued",
        "progress": last["progress"] if last else 0.0,
        "message": last["message"] if last else "",
        "last_seq": last["seq"] if last else 0,
        "error": (
            failures[-1]["payload"].get("error")
            if failures and failures[-1]["type"] == EventType.FAILED
            else None
        ),
    }
    for column, value in expected.items():
        if row[column] != value:
            raise Refused(
                generation.number,
                f"the generation's {column} is {shown(row[column])} but its log says "
                f"{shown(value)}: a row must say what its events say",
            )
    started = any(e["status"] != Status.QUEUED for e in log)
    finished = last is not None and last["type"] in TERMINAL_TYPES
    for column, says in (("started_at", started), ("finished_at", finished)):
        if (row[column] is not None) != says:
            state = "a time" if row[column] is not None else "no time"
            raise Refused(
                generation.number,
                f"the generation's {column} is {state} but its log says it "
                f"{'did' if says else 'did not'} {column.removesuffix('ed_at')}",
            )


def _check_files(
    lines: Sequence[Line], events: Sequence[Line], log: Sequence[dict[str, Any]], generation: str
) -> list[dict[str, Any]]:
    """Each file passes the files' rule and is what the last file.saved naming it says."""
    saved: dict[str, tuple[Line, dict[str, Any]]] = {}  # path -> its last file.saved
    for line, event in zip(events, log, strict=True):
        if event["type"] == EventType.FILE_SAVED:
            saved[event["payload"]["path"]] = (line, event)
    files: dict[str, dict[str, Any]] = {}
    for line in lines:
        file = columns(line, f"file {shown(line.row.get('path'))}", FILE_COLUMNS)
        path, content = file["path"], file["content"]
        if file["generation_id"] != generation:
            raise Refused(line.number, f"file {shown(path)} belongs to {file['generation_id']}")
        try:
            check_path(path)
            check_content(path, content)
        except FileRefused as exc:
            raise Refused(line.number, str(exc)) from None
        if path in files:
            raise Refused(line.number, f"file {path!r} appears twice")
        size, sha256 = len(content.encode()), hashlib.sha256(content.encode()).hexdigest()
        if file.get("redacted_at") is not None:
            if content:
                raise Refused(line.number, f"file {path!r}: redacted, yet it has content")
            size, sha256 = file["size"], file["sha256"]  # the content's, before retention
        if (file["size"], file["sha256"]) != (size, sha256):
            raise Refused(line.number, f"file {path!r}: its size or sha256 is not its content's")
        if path not in saved:
            raise Refused(line.number, f"file {path!r}: no file.saved event names it")
        _, event = saved[path]
        if file["seq"] != event["seq"]:
            raise Refused(
                line.number,
                f"file {path!r}: its seq is {file['seq']}, but the last file.saved event naming "
                f"it is seq {event['seq']}",
            )
        payload = event["payload"]
        said = (payload.get("size"), payload.get("sha256"), payload.get("language"))
        if said != (size, sha256, file["language"]):
            raise Refused(
                line.number,
                f"file {path!r}: the file.saved event at seq {event['seq']} says another size, "
                "sha256 or language",
            )
        files[path] = file
    for path, (line, event) in saved.items():
        if path not in files:
            raise Refused(
                line.number, f"event seq {event['seq']} saved file {path!r}, which is not there"
            )
    return list(files.values())
