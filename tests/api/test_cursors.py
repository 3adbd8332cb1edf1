"""The API's opaque cursors: each round-trips, and anything else is a 400, never a 500."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from service.api.cursors import (
    decode_feed_cursor,
    decode_list_cursor,
    encode_feed_cursor,
    encode_list_cursor,
)
from service.errors import InvalidRequest
from service.store.event_log import FeedPosition


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def test_a_feed_cursor_round_trips_and_none_is_the_start() -> None:
    position = FeedPosition(123456789, uuid4(), 42)
    assert decode_feed_cursor(encode_feed_cursor(position)) == position
    assert decode_feed_cursor(None) == FeedPosition()
    assert decode_feed_cursor("") == FeedPosition()
    assert "=" not in encode_feed_cursor(position)


@pytest.mark.parametrize(
    "bad",
    [
        "@@@",
        "MTox",  # "1:1": too few parts
        b64("1:not-a-uuid:3"),
        b64(f"-1:{uuid4()}:3"),
        b64(f"1:{uuid4()}:-3"),
        "A" * 121,
        b64("\udcff".encode("utf-8", "surrogatepass").decode("latin-1")),
    ],
)
def test_a_feed_cursor_that_does_not_decode_is_invalid(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="pass back next_cursor"):
        decode_feed_cursor(bad)


def test_a_list_cursor_round_trips() -> None:
    created_at, generation_id = datetime(2026, 11, 29, 12, 0, 1, 123456, tzinfo=UTC), uuid4()
    cursor = encode_list_cursor(created_at, generation_id)
    assert decode_list_cursor(cursor) == (created_at, generation_id)


@pytest.mark.parametrize(
    "bad",
    [
        "@@@",
        b64("[]"),
        b64('["yesterday", "x"]'),
        b64('{"a": 1}'),
        b64("[" * 150),
        "A" * 201,
    ],
)
def test_a_list_cursor_that_does_not_decode_is_invalid(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="pass back next_cursor"):
        decode_list_cursor(bad)
