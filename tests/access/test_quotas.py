"""Open streams per owner in one process: counted while held, refused beyond the quota."""

from __future__ import annotations

import pytest

from service.access.quotas import StreamSlots
from service.errors import TooManyRequests


def test_slots_are_counted_per_owner_and_refused_beyond_the_limit() -> None:
    slots = StreamSlots()
    with slots.hold("alice", 2), slots.hold("alice", 2), slots.hold("bob", 2):
        assert (slots.open_for("alice"), slots.open_for("bob")) == (2, 1)
        with (
            pytest.raises(TooManyRequests, match="alice has 2 streams open") as refused,
            slots.hold("alice", 2),
        ):
            pass
        assert refused.value.retry_after_s >= 1
        assert slots.open_for("alice") == 2
    assert (slots.open_for("alice"), slots.open_for("bob")) == (0, 0)


def test_a_slot_is_given_back_when_its_stream_fails_and_zero_is_no_limit() -> None:
    slots = StreamSlots()
    with pytest.raises(RuntimeError), slots.hold("alice", 1):
        raise RuntimeError("the stream broke")
    assert slots.open_for("alice") == 0
    with slots.hold("alice", 0), slots.hold("alice", 0), slots.hold("alice", 0):
        assert slots.open_for("alice") == 3
