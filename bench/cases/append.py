"""Case 1: append throughput, genstream's own append path, alone and grouped, beside a bare
asyncpg loop, alone and grouped the same way."""

from __future__ import annotations

from bench.appends import (
    LAYERS,
    bare_grouped_rate,
    bare_rate,
    grouped_rate,
    layer_rates,
    service_rate,
)
from bench.core import Context, Outcome, Summary, Table, fmt_summary, ratio, row

TARGET_RATIO = 0.90

# What each column measures, in the order of the table (bench/appends.py).
PATHS = {
    "genstream": service_rate,
    "grouped": grouped_rate,
    "bare": bare_rate,
    "bare grouped": bare_grouped_rate,
}


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
                # Each repetition starts with the next path, so none always gets the warmest
                # cache or the quietest machine.
                order = list(PATHS)[rep % len(PATHS) :] + list(PATHS)[: rep % len(PATHS)]
                for which in order:
                    rate = await PATHS[which](ctx.database_url, writers, batch, seconds)
                    rates.setdefault((writers, batch, which), []).append(rate)

    table = Table(
        "Append throughput, durable commits (events/s: median (min-max) over repetitions)",
        [
            "generations", "events/append", "genstream", "grouped", "bare asyncpg",
            "bare grouped", "genstream / bare", "grouped / bare", "grouped / genstream",
        ],
    )  # fmt: skip
    missed: list[str] = []
    for writers in concurrencies:
        for batch in batches:
            service, grouped, bare, bare_grouped = (
                rates[(writers, batch, which)] for which in PATHS
            )
            relative = ratio(service, bare)
            grouped_relative = ratio(grouped, bare)
            table.add(
                str(writers),
                str(batch),
                *(fmt_summary(Summary.of(r)) for r in (service, grouped, bare, bare_grouped)),
                fmt_summary(relative),
                fmt_summary(grouped_relative),
                fmt_summary(ratio(grouped, service)),
            )
            if grouped_relative.median < TARGET_RATIO:
                missed.append(f"{writers}x{batch} ({grouped_relative.median:.2f})")
            outcome.rows.append(
                row(
                    {"generations": writers, "events_per_append": batch},
                    genstream_events_per_s=Summary.of(service),
                    grouped_events_per_s=Summary.of(grouped),
                    bare_events_per_s=Summary.of(bare),
                    bare_grouped_events_per_s=Summary.of(bare_grouped),
                    ratio_genstream_to_bare=relative,
                    ratio_grouped_to_bare=grouped_relative,
                    ratio_grouped_to_genstream=ratio(grouped, service),
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
        "keys, generation row UPDATE, INSERT, pg_notify: one statement). grouped = the same "
        "emits through the process's Appender, as a worker's runs append: what waits while a "
        "group is in flight goes as one event_log.append_many (one statement, one commit, a "
        "pg_notify per run); an append that finds it idle goes alone, at once. bare = one "
        "asyncpg connection per writer, INSERT + pg_notify in one CTE, seq counted by the "
        "writer. bare grouped = the bare statement for every waiting writer at once, on one "
        "connection, grouped the same way."
    )
    outcome.notes.append(
        f"target >= {TARGET_RATIO:.2f} of bare at every concurrency (grouped): "
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
