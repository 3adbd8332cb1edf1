"""Case 1: append throughput, genstream's own append path beside a bare asyncpg loop."""

from __future__ import annotations

from bench.appends import bare_rate, service_rate
from bench.core import Context, Outcome, Summary, Table, fmt_summary, ratio, row

TARGET_RATIO = 0.90


async def run(ctx: Context) -> Outcome:
    seconds = 0.5 if ctx.quick else 3.0
    concurrencies = (1, 4, 16)
    batches = (1, 10)
    outcome = Outcome(
        parameters={
            "window_s": seconds,
            "concurrent_generations": concurrencies,
            "events_per_append": batches,
            "event": "llm.delta, ~90 bytes of text",
        }
    )
    rates: dict[tuple[int, int, str], list[float]] = {}
    for rep in ctx.reps():
        for writers in concurrencies:
            for batch in batches:
                # Alternate which goes first, so neither always gets the warmer cache.
                order = ("genstream", "bare") if rep % 2 == 0 else ("bare", "genstream")
                for which in order:
                    measure = service_rate if which == "genstream" else bare_rate
                    rate = await measure(ctx.database_url, writers, batch, seconds)
                    rates.setdefault((writers, batch, which), []).append(rate)

    table = Table(
        "Append throughput, durable commits (events/s: median (min-max) over repetitions)",
        ["generations", "events/append", "genstream", "bare asyncpg", "genstream / bare"],
    )
    missed: list[str] = []
    for writers in concurrencies:
        for batch in batches:
            service = rates[(writers, batch, "genstream")]
            bare = rates[(writers, batch, "bare")]
            relative = ratio(service, bare)
            table.add(
                str(writers),
                str(batch),
                fmt_summary(Summary.of(service)),
                fmt_summary(Summary.of(bare)),
                fmt_summary(relative),
            )
            if relative.median < TARGET_RATIO:
                missed.append(f"{writers}x{batch} ({relative.median:.2f})")
            outcome.rows.append(
                row(
                    {"generations": writers, "events_per_append": batch},
                    genstream_events_per_s=Summary.of(service),
                    bare_events_per_s=Summary.of(bare),
                    ratio_genstream_to_bare=relative,
                )
            )
    outcome.tables.append(table)
    outcome.notes.append(
        "genstream = LogEmitter.emit -> event_log.append (pool acquire, fence, idempotency "
        "keys, generation row UPDATE, INSERT, pg_notify: one statement). bare = one asyncpg "
        "connection per writer, INSERT + pg_notify in one CTE, seq counted by the writer."
    )
    outcome.notes.append(
        f"target >= {TARGET_RATIO:.2f} of bare at every concurrency: "
        + ("met" if not missed else "missed at " + ", ".join(missed))
    )
    return outcome
