"""What the API answers, as frozen dataclasses. Each is built from the JSON the server sent
and keeps only the keys it knows: a newer server may add keys, and an older client ignores
them (the contract's rule for readers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from genstream_client.errors import ProtocolError
from genstream_client.events import TERMINAL_TYPES


def _time(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a generation's log, as every endpoint and the stream carry it.

    ``type`` is one of ``EventType``'s values, or a type this client does not know (a newer
    server): such an event is still yielded, never an error. ``data`` is what
    ``EVENT_DATA[type]`` describes, e.g. ``cast(FileSavedData, event.data)["path"]``.
    ``raw`` is the event's JSON text exactly as the server sent it; ``chain`` its chain hash
    (``genstream_client.chain``).
    """

    generation_id: str
    seq: int
    type: str
    status: str
    stage: str
    progress: float
    message: str
    timestamp: datetime
    data: Mapping[str, Any]
    raw: str = field(repr=False, compare=False)
    chain: str | None = None  # None from a server without chain hashes

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    @classmethod
    def from_json(cls, raw: str) -> Event:
        try:
            body = json.loads(raw)
            return cls.from_dict(body, raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"not an event ({exc}): {raw[:200]!r}") from None

    @classmethod
    def from_dict(cls, body: Mapping[str, Any], raw: str) -> Event:
        seq = body["seq"]
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise TypeError(f"seq is {seq!r}")
        return cls(
            generation_id=str(body["generation_id"]),
            seq=seq,
            type=str(body["type"]),
            status=str(body["status"]),
            stage=str(body.get("stage", "")),
            progress=float(body.get("progress", 0.0)),
            message=str(body.get("message", "")),
            timestamp=datetime.fromisoformat(body["timestamp"]),
            data=body.get("data") or {},
            raw=raw,
            chain=str(body["chain"]) if body.get("chain") is not None else None,
        )


@dataclass(frozen=True, slots=True)
class EventPage:
    """``GET .../events``: events after ``after``, ``next_after`` to ask for the next page."""

    events: list[Event]
    next_after: int
    has_more: bool

    @classmethod
    def from_text(cls, text: str) -> EventPage:
        """Each event keeps its JSON text as the server wrote it (``Event.raw``)."""
        try:
            body = json.loads(text)
            raws = _array_items(text, "events")
            if len(raws) != len(body["events"]):  # not the server's layout: re-serialized
                raws = [json.dumps(event, separators=(",", ":")) for event in body["events"]]
            events = [Event.from_dict(e, raw) for e, raw in zip(body["events"], raws, strict=True)]
            return cls(events, int(body["next_after"]), bool(body["has_more"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(f"not a page of events ({exc}): {text[:200]!r}") from None


_ARRAY_START = re.compile(r'\s*\{\s*"(?P<key>[a-z_]+)"\s*:\s*\[\s*')
_AFTER_ITEM = re.compile(r"\s*(?:(,)\s*|(\]))")


def _array_items(text: str, key: str) -> list[str]:
    """The text of each element of the array under ``key`` that ``text``, a JSON object,
    starts with; [] if it starts otherwise. The server writes the events endpoint's body as
    ``{"events":[<stored JSON>,...],...}``, so this finds the stored texts as they are."""
    start = _ARRAY_START.match(text)
    if start is None or start.group("key") != key:
        return []
    items: list[str] = []
    decoder, position = json.JSONDecoder(), start.end()
    if text.startswith("]", position):
        return items
    while True:
        _, end = decoder.raw_decode(text, position)
        items.append(text[position:end])
        after = _AFTER_ITEM.match(text, end)
        if after is None:
            return []
        if after.group(2):
            return items
        position = after.end()


@dataclass(frozen=True, slots=True)
class Generation:
    """``GET /api/generations/{id}``: a generation's state."""

    id: str
    status: str
    stage: str
    message: str
    progress: float
    last_seq: int
    provider: str
    model: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Generation:
        return cls(
            id=str(body["id"]),
            status=body["status"],
            stage=body.get("stage", ""),
            message=body.get("message", ""),
            progress=float(body.get("progress", 0.0)),
            last_seq=int(body.get("last_seq", 0)),
            provider=body.get("provider", ""),
            model=body.get("model"),
            created_at=datetime.fromisoformat(body["created_at"]),
            started_at=_time(body.get("started_at")),
            finished_at=_time(body.get("finished_at")),
            error=body.get("error"),
        )


@dataclass(frozen=True, slots=True)
class GenerationPage:
    """``GET /api/generations``: newest first; ``next_cursor`` None on the last page."""

    items: list[Generation]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Created:
    """``POST /api/generations``'s answer."""

    id: str
    status: str
    stream_url: str
    stream_token: str
    events_url: str

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Created:
        return cls(
            str(body["id"]),
            body["status"],
            body["stream_url"],
            body["stream_token"],
            body["events_url"],
        )


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One generated file; ``seq`` is the ``file.saved`` event that announced it."""

    path: str
    size: int
    sha256: str
    language: str
    seq: int

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> FileEntry:
        return cls(body["path"], body["size"], body["sha256"], body["language"], body["seq"])
