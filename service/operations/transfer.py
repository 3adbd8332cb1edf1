"""Export and import of whole generations as NDJSON, so another genstream holds the same log.

One line per row: ``{"generation": {...}}``, then that generation's ``{"event": {...}}``
lines in seq order, then its ``{"file": {...}}`` lines; the next generation follows. Each
object is the row's JSON as PostgreSQL renders it (``store/transfer.py``), so an import
stores the same events with the same seqs, timestamps and payloads: the events endpoint of
the importing genstream answers the same bytes.

An export is untrusted input. Each generation is checked whole (``rows.py``, then
``validation.py``) before any of it is written, then stored in one transaction: a generation
that fails a check is refused, with the line at fault and why, and the others are imported all
the same. Each generation's outcome is reported as soon as it is decided, so a run cut short
still says what it stored. The owner comes from whoever runs the import (``owner``), not from
the file, unless they say the file's owners are to be kept. A generation whose id already
exists here is skipped whole, so importing the same file twice changes nothing. A run exported
while it was still running arrives unclaimed: a worker of the importing genstream resumes it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum, StrEnum
from typing import Final
from uuid import UUID

from service.errors import InvalidRequest, NotFound
from service.operations import rows, validation
from service.operations.rows import Line, Refused, shown
from service.operations.validation import Checked
from service.store import transfer
from service.store.db import Pool, connection
from service.store.reads import Reads


async def export_lines(
    source: Pool | Reads,
    ids: Sequence[UUID] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AsyncIterator[str]:
    """NDJSON lines (each ending in a newline) for the chosen generations, oldest first.

    An id asked for that does not exist is an error before the first line, so that an
    export never looks complete when it is not. Given ``Reads``, it reads its standby once
    that has replayed everything the primary had committed when the export began.
    """
    reads = source if isinstance(source, Reads) else Reads(source, wait_s=0)
    async with reads.caught_up() as conn:
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


class Action(StrEnum):
    IMPORTED = "imported"
    SKIPPED = "skipped"  # already present
    REFUSED = "refused"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one generation of an export (with ``dry_run``: what would have)."""

    action: Action
    generation_id: UUID | None  # None: lines that name no generation line we could read
    line: int  # its first line; refused, the line at fault
    reason: str = ""


@dataclass
class Imported:
    stored: list[UUID] = field(default_factory=list)
    skipped: list[UUID] = field(default_factory=list)  # already there
    refused: list[Outcome] = field(default_factory=list)


class _KeepOwners(Enum):
    KEEP = "keep"


KEEP_OWNERS: Final = _KeepOwners.KEEP
"""``owner=KEEP_OWNERS``: each generation keeps the owner its export names (a trusted migration)."""


@dataclass
class _Generation:
    """The lines of one generation as they came: its generation line, its events, its files;
    ``problem``: the first line that could not be read, which refuses it whole."""

    key: str  # what its lines name as its id (a canonical UUID when it is one), for grouping
    first: int
    generation: Line | None = None
    events: list[Line] = field(default_factory=list)
    files: list[Line] = field(default_factory=list)
    problem: Refused | None = None

    @property
    def id(self) -> UUID | None:
        """Its id, if its generation line was read and names a UUID."""
        if self.generation is None:
            return None
        try:
            return UUID(self.key)
        except ValueError:
            return None


def _key(value: object) -> str:
    try:
        return str(UUID(str(value)))
    except ValueError:
        return repr(value)


def _generations(lines: Iterable[str | bytes]) -> Iterator[_Generation]:
    """The export's lines, one generation at a time. A line that cannot be read belongs to the
    generation being read (it is refused for it); an event or file line naming another
    generation than the one being read starts a generation of its own with no generation line
    (refused too), so one broken line never spills onto a good neighbour."""
    current: _Generation | None = None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            kind, line = rows.parse_line(number, raw)
        except Refused as problem:
            current = current or _Generation(f"line {number}", number)
            current.problem = current.problem or problem
            continue
        if kind == "generation":
            if current is not None:
                yield current
            current = _Generation(_key(line.row.get("id")), number, generation=line)
            continue
        key = _key(line.row.get("generation_id"))
        if current is None or key != current.key:
            if current is not None:
                yield current
            row = "an event" if kind == "event" else "a file"
            named = shown(line.row.get("generation_id")) if key.startswith(("'", '"')) else key
            orphan = Refused(
                number, f"{row} of generation {named} with no generation line before it"
            )
            current = _Generation(key, number, problem=orphan)
        (current.events if kind == "event" else current.files).append(line)
    if current is not None:
        yield current


async def import_generations(
    pool: Pool,
    lines: Iterable[str | bytes],
    *,
    owner: str | _KeepOwners,
    dry_run: bool = False,
) -> AsyncIterator[Outcome]:
    """Check and store each generation of an export (its lines, as text or UTF-8 bytes), whole
    or not at all, yielding what became of each as soon as it is decided.

    ``owner``: every generation's owner here, whatever the export says; ``KEEP_OWNERS`` keeps
    the export's. ``dry_run``: check and report, write nothing. A generation already present
    is skipped whole, so importing the same export twice changes nothing.
    """
    if owner is not KEEP_OWNERS and not owner.strip():
        raise InvalidRequest("an owner must not be blank")
    new_owner = None if owner is KEEP_OWNERS else owner
    first_lines: dict[str, int] = {}
    for read in _generations(lines):
        try:
            checked = _check(read, new_owner, first_lines)
            async with connection(pool) as conn:
                if dry_run:
                    stored = not await transfer.select_generation_exists(conn, checked.id)
                else:
                    stored = await transfer.insert_generation(
                        conn, checked.row, checked.events, checked.files
                    )
        except Refused as refused:
            yield Outcome(Action.REFUSED, read.id, refused.line, refused.reason)
        except InvalidRequest as refused:  # PostgreSQL refused what the checks let through
            yield Outcome(Action.REFUSED, read.id, read.first, shown(str(refused), 300))
        else:
            yield Outcome(Action.IMPORTED if stored else Action.SKIPPED, checked.id, read.first)


def _check(read: _Generation, owner: str | None, first_lines: dict[str, int]) -> Checked:
    if read.problem is not None:
        raise read.problem
    if read.generation is None:  # only a generation line starts a readable generation
        raise Refused(read.first, "no generation line")
    if (first := first_lines.setdefault(read.key, read.first)) != read.first:
        raise Refused(read.first, f"generation {read.key} appears twice (first on line {first})")
    return validation.check_generation(read.generation, read.events, read.files, owner)


async def import_lines(
    pool: Pool,
    lines: Iterable[str | bytes],
    *,
    owner: str | _KeepOwners,
    dry_run: bool = False,
) -> Imported:
    """``import_generations``, gathered: which generations were stored, skipped, refused."""
    result = Imported()
    async for outcome in import_generations(pool, lines, owner=owner, dry_run=dry_run):
        if outcome.action is Action.REFUSED:
            result.refused.append(outcome)
        elif outcome.generation_id is not None:
            stored = outcome.action is Action.IMPORTED
            (result.stored if stored else result.skipped).append(outcome.generation_id)
    return result
