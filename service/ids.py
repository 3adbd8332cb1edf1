"""Generation ids: UUIDv7 (RFC 9562), so that a range of ids is a range of creation time.

A v7 id begins with its 48-bit Unix time in milliseconds (big-endian), then the version (7),
then random bits; PostgreSQL compares uuids bytewise, so ids sort by the millisecond they were
made in. The event log is range-partitioned on them (``store/partitions.py``): a period's
partition starts at the lowest v7 id of the period's first millisecond. Ids made before this
scheme (v4, uniformly random) keep working everywhere: they sort wherever chance put them,
and the log keeps them in its DEFAULT partition.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from uuid import UUID

import uuid6

_VERSION_7 = 0x7 << 76  # the version nibble
_VARIANT = 0x2 << 62  # RFC 9562's variant bits (10)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def new_generation_id() -> UUID:
    """A fresh UUIDv7 for this instant (monotonic within the process)."""
    return UUID(int=uuid6.uuid7().int)


def _unix_ms(at: datetime) -> int:
    if at.tzinfo is None:
        raise ValueError("a naive datetime names no instant: give it a timezone")
    return (at - _EPOCH) // timedelta(milliseconds=1)


def lowest_v7(at: datetime) -> UUID:
    """The smallest v7 id of the millisecond ``at`` falls in: every id made at or after it
    sorts at or above it, every id made before it sorts below."""
    return UUID(int=(_unix_ms(at) << 80) | _VERSION_7 | _VARIANT)


def v7_at(at: datetime) -> UUID:
    """A v7 id as if made at ``at`` (random rest): tests place runs in a period this way."""
    return UUID(int=lowest_v7(at).int | (secrets.randbits(12) << 64) | secrets.randbits(62))
