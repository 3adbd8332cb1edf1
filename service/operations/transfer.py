"""Export and import of whole generations as NDJSON, so another genstream holds the same log.

One line per row: ``{"generation": {...}}``, then that generation's ``{"event": {...}}``
lines in seq order, then its ``{"file": {...}}`` lines; the next generation follows. Each
object is the row's JSON as PostgreSQL renders it (``store/transfer.py``), so an import
stores the same events with the same seqs, timestamps and payloads: the events endpoint of
the importing genstream answers the same bytes. A generation whose id already exists there
is skipped whole, so importing the same file twice changes nothing. A run exported while it
was still running arrives unclaimed: a worker of the importing genstream resumes it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from service.errors import InvalidRequest, NotFound
from service.store import transfer
from service.store.db import Pool, connection


async def export_lines(
    pool: Pool,
    ids: Sequence[UUID] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AsyncIterator[str]:
    """NDJSON lines (each ending in a newline) for the chosen generations, oldest first.

    An id asked for that does not exist is an error before the first line, so that an
    export never looks complete when it is not.
    """
    async with connection(pool) as conn:
        chosen = await transfer.select_generation_ids(conn, ids, since, until)
        if ids and (missing := sorted(set(ids) - set(chosen), key=str)):
            named = ", ".join(str(generation_id) for generation_id in missing)
            where = " created in that range" if since or until else ""
            raise NotFound(f"no generation {named}{where}")
        for generation_id in chosen:
            row = await transfer.select_generation_row(conn, generation_id)
            if row is None:
                continue  # deleted meanwhile (genstream never deletes; an operator might)
            yield f'{{"generation":{row}}}\n'
            async for event in transfer.event_rows(conn, generation_id):
                yield f'{{"event":{event}}}\n'
            for file in await transfer.select_file_rows(conn, generation_id):
                yield f'{{"file":{file}}}\n'


@dataclass
class Imported:
    stored: list[UUID] = field(default_factory=list)
    skipped: list[UUID] = field(default_factory=list)  # already there


@dataclass
class _Pending:
    generation: dict[str, object]
    events: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


async def import_lines(pool: Pool, lines: Iterable[str]) -> Imported:
    """Store every generation in ``lines`` (an export), each whole or not at all."""
    result = Imported()
    pending: _Pending | None = None

    async def flush() -> None:
        if pending is None:
            return
        generation_id = UUID(str(pending.generation["id"]))
        async with connection(pool) as conn:
            stored = await transfer.insert_generation(
                conn, json.dumps(pending.generation), pending.events, pending.files
            )
        (result.stored if stored else result.skipped).append(generation_id)

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ((kind, row),) = record.items()
        except (ValueError, AttributeError) as exc:
            raise InvalidRequest(f"line {number}: not an export line ({exc})") from exc
        if kind == "generation":
            await flush()
            pending = _Pending(row)
        elif kind in ("event", "file") and pending is not None:
            if str(row.get("generation_id")) != str(pending.generation["id"]):
                raise InvalidRequest(f"line {number}: a {kind} of another generation")
            (pending.events if kind == "event" else pending.files).append(json.dumps(row))
        else:
            raise InvalidRequest(f"line {number}: unexpected {kind!r} line")
    await flush()
    return result
