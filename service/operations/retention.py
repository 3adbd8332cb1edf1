"""Retention: the deployment's two policies applied in one pass (``python -m service
retention``), run by the operator's scheduler (cron, a systemd timer), never by a request.

Drop first, then redact: what is about to be dropped is not worth rewriting. Both work in
batches of runs, one transaction each, so a pass holds no lock for long and an interrupted
pass loses nothing: the next one goes on where it stopped (what is done is marked). A dry run
reads the same rows and counts what a pass would do, writing nothing (no row lock, no WAL, no
dead rows for VACUUM): its counts are exact as of its reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar
from uuid import UUID

import asyncpg

from service.observe.logs import get_logger
from service.store import partitions, retention
from service.store.db import Connection, Pool, connection

log = get_logger(__name__)
T = TypeVar("T")

BATCH: Final = 100  # runs per transaction
START: Final = (datetime.min.replace(tzinfo=UTC), UUID(int=0))
EVERY_ID: Final = (UUID(int=0), UUID(int=2**128 - 1))


@dataclass(frozen=True, slots=True)
class Policy:
    redact_after_days: float | None = None
    drop_after_days: float | None = None

    def __post_init__(self) -> None:
        redact, drop = self.redact_after_days, self.drop_after_days
        if redact is not None and drop is not None and drop <= redact:
            raise ValueError(
                f"drop after {drop:g} days comes before redact after {redact:g} days: "
                "runs would be dropped unredacted (set the drop later, or no redaction)"
            )


@dataclass(slots=True)
class Report:
    dry_run: bool
    redacted_generations: int = 0
    redacted_events: int = 0
    redacted_files: int = 0
    chars_removed: int = 0
    dropped_generations: int = 0
    dropped_events: int = 0
    dropped_partitions: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # periods past the age that stay, and why

    def lines(self) -> list[str]:
        would = "would be " if self.dry_run else ""
        partitions = ", ".join(self.dropped_partitions)
        return [
            f"redacted: {self.redacted_generations} run(s), {self.redacted_events} event(s), "
            f"{self.redacted_files} file(s), {self.chars_removed} character(s) {would}removed",
            f"dropped: {self.dropped_generations} run(s), {self.dropped_events} event(s) "
            f"{would}gone" + (f" (partitions {partitions})" if partitions else ""),
            *(f"kept: {why}" for why in self.kept),
        ]


def _days(days: float) -> str:
    return f"{days:g} day" + ("" if days == 1 else "s")


async def apply(
    pool: Pool,
    policy: Policy,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch: int = BATCH,
) -> Report:
    """One pass of both policies as of ``now``; see the module's docstring."""
    now = now or datetime.now(UTC)
    report = Report(dry_run)
    async with connection(pool) as conn:
        dropped = retention.DryDrops()
        if policy.drop_after_days is not None:
            dropped = await _drop(conn, report, policy.drop_after_days, now, dry_run, batch)
        if policy.redact_after_days is not None:
            # A dry run's drops only counted: what they took is not counted as redacted too.
            left_out = dropped if dry_run else retention.DryDrops()
            await _redact(conn, report, policy.redact_after_days, now, left_out, dry_run, batch)
    log.info("retention.pass", **asdict(report))
    return report


async def _batches(
    conn: Connection,
    step: Callable[[tuple[datetime, UUID]], Awaitable[tuple[T, tuple[datetime, UUID] | None]]],
    count: Callable[[T], None],
) -> None:
    """Run ``step`` from the start of the keyset until it says nothing is left, each in its
    own transaction (a dry run's steps only read)."""
    after: tuple[datetime, UUID] | None = START
    while after is not None:
        async with conn.transaction():
            done, after = await step(after)
        count(done)


async def _redact(
    conn: Connection,
    report: Report,
    days: float,
    now: datetime,
    dropped: retention.DryDrops,
    dry_run: bool,
    batch: int,
) -> None:
    reason = f"retention: the run finished more than {_days(days)} ago"
    marker = retention.marker(now, reason)

    def count(done: retention.Redacted) -> None:
        report.redacted_generations += done.generations
        report.redacted_events += done.events
        report.redacted_files += done.files
        report.chars_removed += done.chars

    await _batches(
        conn,
        lambda after: retention.redact_batch(
            conn,
            finished_before=now - timedelta(days=days),
            dropped=dropped,
            after=after,
            limit=batch,
            marker=marker,
            at=now,
            dry_run=dry_run,
        ),
        count,
    )


async def _drop(
    conn: Connection, report: Report, days: float, now: datetime, dry_run: bool, batch: int
) -> retention.DryDrops:
    """Whole periods (O(1): partitions detached and dropped, nothing for VACUUM), then, one
    run at a time, the runs past the age in the DEFAULT partition. A period that a younger run
    keeps (a retry finished lately) stays whole until its last run is old enough: deleting
    most of a period row by row is the VACUUM storm partitions are there to avoid. Returns
    what went, for a dry run's redaction to leave out."""
    reason = f"runs finished more than {_days(days)} before {now:%Y-%m-%d} are not kept"
    cutoff = now - timedelta(days=days)
    periods = [  # every period's range, past and ahead: the per-run pass leaves them alone
        retention.period_range([p])
        for p in await partitions.select_partitions(conn, partitions.TABLES[0])
        if not p.is_default
    ]
    gone: list[tuple[UUID, UUID]] = []
    for period in await retention.droppable_periods(conn, cutoff):
        names = [partition.name for partition in period]
        try:
            async with conn.transaction():  # rolled back by any exception
                done, young = await retention.drop_period(
                    conn, period, finished_before=cutoff, reason=reason, at=now, dry_run=dry_run
                )
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
            report.kept.append(f"{', '.join(names)}: the log stayed busy; the next pass tries")
            continue
        except retention.PeriodChanged as changed:
            report.kept.append(f"{', '.join(names)}: {changed}; the next pass tries")
            continue
        if young:
            report.kept.append(f"{', '.join(names)}: {young} run(s) finished too recently")
            continue
        report.dropped_partitions += names
        gone.append(retention.period_range(period))
        report.dropped_generations += done.generations
        report.dropped_events += done.events

    def count(done: retention.Dropped) -> None:
        report.dropped_generations += done.generations
        report.dropped_events += done.events

    await _batches(
        conn,
        lambda after: retention.drop_batch(
            conn,
            finished_before=cutoff,
            within=EVERY_ID,
            skip=periods,
            after=after,
            limit=batch,
            reason=reason,
            at=now,
            dry_run=dry_run,
        ),
        count,
    )
    return retention.DryDrops(periods=gone, every_period=periods, outside_periods_before=cutoff)
