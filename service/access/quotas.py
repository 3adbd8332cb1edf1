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


class StreamSlots:
    """How many streams each owner holds open in this process."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def open_for(self, owner: str) -> int:
        return self._open[owner]

    @contextmanager
    def hold(self, owner: str, limit: int) -> Iterator[None]:
        """One slot for the life of a stream; refused (429) when ``owner`` holds ``limit``."""
        if limit and self._open[owner] >= limit:
            raise TooManyRequests(
                f"{owner} has {self._open[owner]} streams open on this server, the most "
                "allowed: close one (or wait for a generation to finish)",
                retry_after_s=STREAM_RETRY_AFTER_S,
            )
        self._open[owner] += 1
        try:
            yield
        finally:
            self._open[owner] -= 1
            if not self._open[owner]:
                del self._open[owner]
