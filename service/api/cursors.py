"""The two opaque cursors of the API, in one place so that their formats cannot drift apart.

Both are URL-safe base64 without padding, and both are opaque to clients (pass back
``next_cursor`` as received): the list of generations pages by ``(created_at, id)``, newest
first; the global feed pages by ``(transaction id, generation id, seq)`` (``FeedPosition``).
A cursor that does not decode is the caller's mistake, so a 400, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Final
from uuid import UUID

from service.errors import InvalidRequest
from service.store.event_log import FeedPosition

LIST_CURSOR_MAX_CHARS: Final = 200
FEED_CURSOR_MAX_CHARS: Final = 120
INVALID: Final = "invalid cursor: pass back next_cursor exactly as received"


def encode_list_cursor(created_at: datetime, generation_id: UUID) -> str:
    """After this generation in the newest-first list."""
    return _encode(json.dumps([created_at.isoformat(), str(generation_id)]))


def decode_list_cursor(cursor: str) -> tuple[datetime, UUID]:
    raw = _decode(cursor, LIST_CURSOR_MAX_CHARS)
    try:
        created_at, generation_id = json.loads(raw)
        return datetime.fromisoformat(created_at), UUID(generation_id)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidRequest(INVALID) from exc


def encode_feed_cursor(position: FeedPosition) -> str:
    """After this event in the global feed."""
    return _encode(f"{position.tx_id}:{position.generation_id}:{position.seq}")


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
    if position.tx_id < 0 or position.seq < 0:
        raise InvalidRequest(INVALID)
    return position


def _encode(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode(cursor: str, max_chars: int) -> str:
    if len(cursor) > max_chars:
        raise InvalidRequest(INVALID)
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequest(INVALID) from exc
