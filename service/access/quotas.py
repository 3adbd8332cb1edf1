"""Quotas a process enforces by itself: open streams per owner.

A stream lives in one process, so its count is that process's to keep; the quotas on
creating generations bind across processes and are held in PostgreSQL instead
(``generation/runs.py``). A quota of 0 is no limit, as in the settings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from service.errors import TooManyRequests

STREAM_RETRY_AFTER_S: Final = 5  # a hint: streams end when their generation does


def effective(own: int | None, default: int) -> int | None:
    """A key's own quota wins over the deployment's; 0 (either) is no limit (None)."""
    chosen = default if own is None else own
    return chosen or None


class StreamSlots:
    """How many streams each owner holds open in this process."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def open_for(self, owner: str) -> int:
        return self._open[owner]

    def take(self, owner: str, limit: int | None) -> None:
        """One slot, refused (429) when ``owner`` holds ``limit`` (None: no limit); the
        caller gives it back with ``give_back`` when its stream ends, however it ends."""
        if limit and self._open[owner] >= limit:
            raise TooManyRequests(
                f"{owner} has {self._open[owner]} streams open on this server, the most "
                "allowed: close one (or wait for a generation to finish)",
                retry_after_s=STREAM_RETRY_AFTER_S,
            )
        self._open[owner] += 1

    def give_back(self, owner: str) -> None:
        self._open[owner] -= 1
        if self._open[owner] <= 0:
            del self._open[owner]

    @contextmanager
    def hold(self, owner: str, limit: int | None) -> Iterator[None]:
        """A slot for the life of the block."""
        self.take(owner, limit)
        try:
            yield
        finally:
            self.give_back(owner)
