"""The two opaque cursors of the API, in one place so that their formats cannot drift apart.

Both are URL-safe base64 without padding, and both are opaque to clients (pass back
``next_cursor`` as received): the list of generations pages by ``(created_at, id)``, newest
first; the global feed pages by ``(transaction id, generation id, seq)`` (``FeedPosition``).
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
