"""``observe/metrics.py``: the exposition a scraper reads, and the bound on the series a
tenant can create."""

from __future__ import annotations

import math
import re

from prometheus_client.parser import text_string_to_metric_families

from service.observe import metrics
from service.observe.metrics import LABEL_VALUES_MAX, Counter, Gauge, Histogram


def exposition(
    *families: Counter | Histogram | Gauge,
) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.registry import Collector

    class Just(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            for family in families:
                yield family.collect()

    registry = CollectorRegistry()
    registry.register(Just())
    text = generate_latest(registry).decode()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_a_histogram_is_cumulative_with_its_count_and_sum() -> None:
    histogram = Histogram("t_seconds", "test", buckets=(0.001, 0.01, 0.1))
    for value in (0.0005, 0.001, 0.005, 0.05, 3.0):
        histogram.observe(value)

    samples = exposition(histogram)

    buckets = {dict(labels)["le"]: count for labels, count in samples["t_seconds_bucket"].items()}
    assert buckets == {"0.001": 2, "0.01": 3, "0.1": 4, "+Inf": 5}
    assert samples["t_seconds_count"][()] == 5
    assert math.isclose(samples["t_seconds_sum"][()], 3.0565)


def test_a_label_from_users_stops_making_series_at_the_cap() -> None:
    counter = Counter("t_calls", "test", ["model"])
    for n in range(LABEL_VALUES_MAX + 10):
        counter.labels(f"model-{n}").inc()
    counter.labels("model-0").inc()

    samples = exposition(counter)["t_calls_total"]

    assert len(samples) == LABEL_VALUES_MAX + 1
    assert samples[(("model", "other"),)] == 10
    assert samples[(("model", "model-0"),)] == 2


def test_a_gauge_adds_what_it_is_set_to_and_what_its_owners_report() -> None:
    gauge = Gauge("t_open", "test", ["state"])
    first, second = object(), object()
    gauge.read_from(first, lambda: [(("idle",), 2.0)])
    gauge.read_from(second, lambda: [(("idle",), 3.0), (("busy",), 1.0)])
    gauge.set(4.0, "queued")

    assert gauge.value("idle") == 5.0
    gauge.forget(second)
    samples = exposition(gauge)["t_open"]
    assert samples == {(("state", "idle"),): 2.0, (("state", "queued"),): 4.0}


def test_every_metric_is_named_for_genstream_with_its_unit() -> None:
    names = metrics.names()
    assert len(names) == len(set(names))
    assert all(name.startswith("genstream_") for name in names)
    for name in names:
        if re.search(r"_(duration|lag|age|wait|unreachable)(_|$)", name):
            assert name.endswith("_seconds"), name
    assert b"genstream_events_appended_total" in metrics.render()
