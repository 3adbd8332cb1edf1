"""Case 1: append throughput, genstream's own append path beside a bare asyncpg loop."""

from __future__ import annotations

from bench.appends import LAYERS, bare_rate, layer_rates, service_rate
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
    layers: dict[str, list[float]] = {layer: [] for layer in LAYERS}
    for rep in ctx.reps():
        for layer, rate in (await layer_rates(ctx.database_url, seconds)).items():
            layers[layer].append(rate)
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
    outcome.tables.append(_breakdown(layers))
    outcome.rows += [
        row({"layer": layer, "writers": 1, "events_per_append": 1},
            appends_per_s=Summary.of(layers[layer]),
            us_per_append=Summary.of([1e6 / rate for rate in layers[layer]]))
        for layer in LAYERS
    ]  # fmt: skip
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


def _breakdown(layers: dict[str, list[float]]) -> Table:
    """Where one writer's append time goes: each layer's µs per append, and what it adds."""
    table = Table(
        "Where one writer's single-event append goes (each layer adds to the one above; "
        "median (min-max) over repetitions)",
        ["layer", "appends/s", "µs per append", "µs added"],
    )
    previous: list[float] | None = None
    for layer in LAYERS:
        micros = [1e6 / rate for rate in layers[layer]]
        added = (
            fmt_summary(Summary.of([m - p for m, p in zip(micros, previous, strict=True)]))
            if previous is not None
            else "-"
        )
        table.add(layer, fmt_summary(Summary.of(layers[layer])), fmt_summary(Summary.of(micros)),
                  added)  # fmt: skip
        previous = micros
    return table
