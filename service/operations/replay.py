"""Printing a generation's stored events as JSON lines: the same text the stream sends, for
``jq``, diffs and audits, at once or at the pace they were recorded."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Literal
from uuid import UUID

from service.store import event_log
from service.store.db import Pool, connection
from service.store.event_log import StoredEvent
from service.store.reads import Reads
from service.streams.follow import Keepalive
from service.streams.pacing import check_replayable, paced

PAGE_SIZE = 1000

Pace = Literal["live", "recorded"]


async def replay(
    source: Pool | Reads,
    generation_id: UUID,
    write: Callable[[str], object],
    *,
    after: int = 0,
    pace: Pace = "live",
    speed: float = 1.0,
) -> int:
    """Write each event after ``after`` as one line; returns how many were written.

    ``live`` writes them as fast as they are read, as the HTTP stream does; ``recorded``
    waits before each the pause that preceded it (a finished generation only). Given
    ``Reads``, the pages come from its standby, complete up to the primary's head.
    """
    reads = source if isinstance(source, Reads) else Reads(source, wait_s=0)
    async with connection(reads.primary) as conn:
        head = await event_log.select_head(conn, generation_id)
    if pace == "recorded":
        check_replayable(head, speed)

    async def pages() -> AsyncGenerator[list[StoredEvent] | Keepalive, None]:
        position = after
        while page := await reads.events_after(
            generation_id, position, PAGE_SIZE, expect=head.last_seq
        ):
            yield page
            position = page[-1].seq

    items = paced(pages(), speed) if pace == "recorded" else pages()
    written = 0
    async for page in items:
        if isinstance(page, list):
            write("".join(event.json + "\n" for event in page))
            written += len(page)
    return written
