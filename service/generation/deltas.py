"""Coalescing of the model's text into ``llm.delta`` events.

A model streams many small chunks; one event each would make a long answer thousands of rows.
Text is held until ``flush_bytes`` have gathered or ``flush_s`` have passed since the last
event, so an answer becomes tens of events while a reader still sees it move several times a
second.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class DeltaBuffer:
    def __init__(
        self,
        *,
        flush_s: float,
        flush_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._flush_s = flush_s
        self._flush_bytes = flush_bytes
        self._clock = clock
        self._parts: list[str] = []
        self._size = 0
        self._last_flush = clock()

    def add(self, text: str) -> str | None:
        """Buffer ``text``; return what should be emitted now, if anything."""
        self._parts.append(text)
        self._size += len(text.encode())
        if self._size >= self._flush_bytes or self._clock() - self._last_flush >= self._flush_s:
            return self.drain()
        return None

    def drain(self) -> str | None:
        """Everything buffered (None when empty); the caller emits it."""
        if self._size == 0:
            self._parts.clear()  # only empty strings were added
            return None
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        self._last_flush = self._clock()
        return text
