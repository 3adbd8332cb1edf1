"""Formatting shared by the stream cases (2 and 7): one measurement list -> cells and JSON."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.core import Summary, fmt_summary, row
from bench.load import Measurement, Shape

LATENCY_COLUMNS = [
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "sends/s",
    "undelivered",
    "server CPU µs/send",
]

METRICS: dict[str, Callable[[Measurement], float]] = {
    "p50_ms": lambda m: m.latency.p50,
    "p95_ms": lambda m: m.latency.p95,
    "p99_ms": lambda m: m.latency.p99,
    "max_ms": lambda m: m.latency.max,
    "sends_per_s": lambda m: m.sends_per_s,
    "publish_rate": lambda m: m.publish_rate,
    "server_cpu_us_per_send": lambda m: m.server_cpu_us_per_send,
    "client_cpu_share": lambda m: m.client_cpu_share,
    "open_s": lambda m: m.open_s,
}


def summary(measurements: Sequence[Measurement], metric: str) -> Summary:
    return Summary.of([METRICS[metric](m) for m in measurements])


def undelivered(measurements: Sequence[Measurement]) -> str:
    missing = sum(m.undelivered for m in measurements)
    expected = sum(m.expected for m in measurements)
    return "0" if not missing else f"{missing:,} of {expected:,}"


def latency_cells(shape: Shape, measurements: Sequence[Measurement]) -> list[str]:
    if shape.closed_loop:  # queues fill, latency says nothing
        latency = ["-"] * 4
    else:
        latency = [
            fmt_summary(summary(measurements, metric))
            for metric in ("p50_ms", "p95_ms", "p99_ms", "max_ms")
        ]
    return [
        *latency,
        fmt_summary(summary(measurements, "sends_per_s")),
        undelivered(measurements),
        fmt_summary(summary(measurements, "server_cpu_us_per_send")),
    ]


def measurement_row(
    shape: Shape, target: str, measurements: Sequence[Measurement]
) -> dict[str, Any]:
    result = row(
        {"target": target, **shape.as_json()},
        **{metric: summary(measurements, metric) for metric in METRICS},
        undelivered=sum(m.undelivered for m in measurements),
        expected=sum(m.expected for m in measurements),
    )
    result["repetitions"] = [m.as_json() for m in measurements]
    return result
