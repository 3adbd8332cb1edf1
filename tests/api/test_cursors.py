"""The API's opaque cursors: each round-trips, and anything else is a 400, never a 500."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from service.api.cursors import (
    decode_feed_cursor,
    decode_list_cursor,
    encode_feed_cursor,
    encode_list_cursor,
)
from service.errors import InvalidRequest
from service.store.event_log import FeedPosition

# In parametrized cases a fixed id: test ids must be the same in every pytest-xdist worker.
AN_ID = UUID("0b7e6f52-3c1d-4a8e-9f2a-5d6c7b8a9e10")


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
        b64(f"-1:{AN_ID}:3"),
        b64(f"1:{AN_ID}:-3"),
        "A" * 121,
        b64("\udcff".encode("utf-8", "surrogatepass").decode("latin-1")),
        # Beyond PostgreSQL's bigint, which stores every tx_id and seq.
        b64(f"{2**63}:{AN_ID}:3"),
        b64(f"1:{AN_ID}:{2**63}"),
        b64(f"{10**40}:{AN_ID}:{10**40}"),
        b64(f"1:{AN_ID}:3\x00"),
        # Other spellings of numbers we would write: not cursors we issued.
        b64(f"+1:{AN_ID}:3"),
        b64(f"1_000:{AN_ID}:3"),
        b64(f" 1:{AN_ID}:3"),
        b64(f"1:{str(AN_ID).upper()}:3"),
    ],
)
def test_a_feed_cursor_that_does_not_decode_is_invalid(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="pass back next_cursor"):
        decode_feed_cursor(bad)


def test_a_feed_cursor_at_the_bigint_limit_decodes() -> None:
    largest = FeedPosition(2**63 - 1, uuid4(), 2**63 - 1)
    assert decode_feed_cursor(encode_feed_cursor(largest)) == largest


def test_a_list_cursor_round_trips() -> None:
    created_at, generation_id = datetime(2026, 11, 29, 12, 0, 1, 123456, tzinfo=UTC), uuid4()
    cursor = encode_list_cursor(created_at, generation_id)
    assert decode_list_cursor(cursor) == (created_at, generation_id)


@pytest.mark.parametrize(
    "edge",
    [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)],
)
def test_a_list_cursor_at_the_edges_of_the_calendar_decodes_in_utc(edge: datetime) -> None:
    generation_id = uuid4()
    decoded = decode_list_cursor(encode_list_cursor(edge, generation_id))
    assert decoded == (edge, generation_id)
    assert decoded[0].utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "raw",
    [
        '["2024-01-01T00:00:00", "{id}"]',  # naive: we never issue one
        '["2024-01-01 00:00:00+00:00", "{id}"]',  # another spelling of a time we might issue
        '["2024-01-01T00:00:00+00:00","{id}"]',
        '["2024-01-01T00:00:00+00:00", "{id_upper}"]',
    ],
)
def test_a_list_cursor_is_accepted_only_exactly_as_issued(raw: str) -> None:
    generation_id = uuid4()
    cursor = b64(raw.format(id=generation_id, id_upper=str(generation_id).upper()))
    with pytest.raises(InvalidRequest, match="pass back next_cursor"):
        decode_list_cursor(cursor)


@pytest.mark.parametrize(
    "bad",
    [
        "@@@",
        b64("[]"),
        b64('["yesterday", "x"]'),
        b64('{"a": 1}'),
        b64("[" * 150),
        "A" * 201,
        # Times that exist in no calendar PostgreSQL and Python share: year 0 and year 10000
        # once moved to UTC.
        b64(json.dumps(["0001-01-01T00:00:00+05:00", str(AN_ID)])),
        b64(json.dumps(["9999-12-31T23:59:59-05:00", str(AN_ID)])),
        b64(json.dumps(["0000-01-01T00:00:00+00:00", str(AN_ID)])),
        b64(json.dumps(["2024-01-01T00:00:00\u0000", str(AN_ID)])),
    ],
)
def test_a_list_cursor_that_does_not_decode_is_invalid(bad: str) -> None:
    with pytest.raises(InvalidRequest, match="pass back next_cursor"):
        decode_list_cursor(bad)
