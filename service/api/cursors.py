"""The opaque cursors of the API, in one place so that their formats cannot drift apart.

All are URL-safe base64 without padding, and all are opaque to clients (pass back
``next_cursor`` as received): the list of generations pages by ``(created_at, id)``, newest
first; the global feed pages by ``(transaction id, generation id, seq)`` (``FeedPosition``);
the multiplexed stream resumes from an ``OwnerCursor`` (its frames' ids), written in binary
because every frame carries one: 34 bytes, and 18 to 34 more per run sent ahead of it.
A cursor that does not decode, or that we could not have issued (another spelling, numbers
past PostgreSQL's bigint, a time outside years 1-9999 once in UTC), is the caller's mistake:
a 400, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime
from typing import Final
from uuid import UUID

from service.errors import InvalidRequest
from service.store.db import BIGINT_MAX
from service.store.event_log import FeedPosition
from service.streams.multiplex import Ahead, OwnerCursor

LIST_CURSOR_MAX_CHARS: Final = 200
FEED_CURSOR_MAX_CHARS: Final = 120
INVALID: Final = "invalid cursor: pass back next_cursor exactly as received"
OPAQUE_CURSOR: Final[dict[str, object]] = {
    "pattern": "^[A-Za-z0-9_-]*$",
    "maxLength": LIST_CURSOR_MAX_CHARS,
    "description": "A `next_cursor` exactly as received: any other text is a 400.",
}
"""What the OpenAPI document can say of a cursor: its alphabet and length (not which texts
of them we issued)."""


def encode_list_cursor(created_at: datetime, generation_id: UUID) -> str:
    """After this generation in the newest-first list."""
    return _encode(_list_cursor_text(created_at, generation_id))


def decode_list_cursor(cursor: str) -> tuple[datetime, UUID]:
    raw = _decode(cursor, LIST_CURSOR_MAX_CHARS)
    try:
        created_at, generation_id = json.loads(raw)
        decoded = datetime.fromisoformat(created_at), UUID(generation_id)
        # Only exactly what encode_list_cursor writes: no naive times, no other spellings.
        if raw != _list_cursor_text(*decoded):
            raise ValueError("not a cursor we issued")
        # In UTC, as PostgreSQL compares it: year 1 at +05:00 is year 0 there, which neither
        # Python nor asyncpg can hold.
        return decoded[0].astimezone(UTC), decoded[1]
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidRequest(INVALID) from exc


def encode_feed_cursor(position: FeedPosition) -> str:
    """After this event in the global feed."""
    return _encode(_feed_cursor_text(position))


def decode_feed_cursor(cursor: str | None) -> FeedPosition:
    """No cursor (or an empty one) is the start of the feed."""
    if not cursor:
        return FeedPosition()
    raw = _decode(cursor, FEED_CURSOR_MAX_CHARS)
    try:
        tx_id, generation_id, seq = raw.split(":")
        position = FeedPosition(int(tx_id), UUID(generation_id), int(seq))
    except ValueError as exc:
        raise InvalidRequest(INVALID) from exc
    in_range = 0 <= position.tx_id <= BIGINT_MAX and 0 <= position.seq <= BIGINT_MAX
    if not in_range or raw != _feed_cursor_text(position):  # "+1", "1_000", " 1": not ours
        raise InvalidRequest(INVALID)
    return position


OWNER_CURSOR_MAX_CHARS: Final = 8000  # a header line nginx accepts by default (8 KiB)
_OWNER_CURSOR_VERSION: Final = 1
_CATCHING_UP: Final = 1


def encode_owner_cursor(cursor: OwnerCursor) -> str:
    """Version, flags, the position (tx_id, generation id, seq) and per run ahead of it: its
    id, its seq and its newest transaction past the position's, as varints."""
    position = cursor.position
    out = bytearray((_OWNER_CURSOR_VERSION, _CATCHING_UP if cursor.catching_up else 0))
    out += position.tx_id.to_bytes(8, "big") + position.generation_id.bytes
    out += position.seq.to_bytes(8, "big")
    for run, ahead in cursor.ahead.items():
        out += run.bytes + _varint(ahead.seq) + _varint(max(ahead.until_tx - position.tx_id, 0))
    return base64.urlsafe_b64encode(bytes(out)).decode().rstrip("=")


def decode_owner_cursor(cursor: str | None) -> OwnerCursor:
    """No cursor (or an empty one): a fresh stream, from the catch-up."""
    if not cursor:
        return OwnerCursor()
    if len(cursor) > OWNER_CURSOR_MAX_CHARS:
        raise InvalidRequest(INVALID)
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        if len(raw) < 34 or raw[0] != _OWNER_CURSOR_VERSION or raw[1] > _CATCHING_UP:
            raise ValueError("not a cursor we issued")
        tx_id = int.from_bytes(raw[2:10], "big")
        position = FeedPosition(tx_id, UUID(bytes=raw[10:26]), int.from_bytes(raw[26:34], "big"))
        ahead: dict[UUID, Ahead] = {}
        at = 34
        while at < len(raw):
            run = UUID(bytes=raw[at : at + 16])
            seq, at = _read_varint(raw, at + 16)
            past, at = _read_varint(raw, at)
            ahead[run] = Ahead(seq, tx_id + past)
        decoded = OwnerCursor(position, raw[1] == _CATCHING_UP, ahead)
        numbers = [
            tx_id,
            position.seq,
            *(a.seq for a in ahead.values()),
            *(a.until_tx for a in ahead.values()),
        ]
        if max(numbers) > BIGINT_MAX or encode_owner_cursor(decoded) != cursor:
            raise ValueError("not a cursor we issued")
    except (binascii.Error, ValueError, IndexError) as exc:
        raise InvalidRequest(INVALID) from exc
    return decoded


def _varint(value: int) -> bytes:
    """LEB128: 7 bits a byte, low first; a seq under 128 is one byte."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(raw: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = raw[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value, at
        if shift > 63:
            raise ValueError("a number past 64 bits")


def _feed_cursor_text(position: FeedPosition) -> str:
    return f"{position.tx_id}:{position.generation_id}:{position.seq}"


def _list_cursor_text(created_at: datetime, generation_id: UUID) -> str:
    if created_at.tzinfo is None:
        raise ValueError("a cursor's time carries its offset")
    return json.dumps([created_at.isoformat(), str(generation_id)])


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str, max_chars: int) -> str:
    if len(cursor) > max_chars:
        raise InvalidRequest(INVALID)
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(INVALID) from exc
