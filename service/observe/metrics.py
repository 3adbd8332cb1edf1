"""The process's Prometheus metrics, all named ``genstream_*`` with their unit in the name.

The values are plain numbers changed from the event loop's thread only, exposed through one
prometheus-client collector. prometheus-client's own counters and histograms take a lock on
every change: measured here, 1.0 µs per ``inc`` and 1.8 µs per ``observe``, which is 4-6% of
the 28 µs a stream spends per send when a thousand streams follow one generation. A change
here is an attribute increment and, for a histogram, a bisect over a dozen bounds (~0.2 µs).
Reading them from the scrape thread (``serve_metrics``) sees each number whole (the GIL);
a histogram's count and sum may differ by the one observation in flight, as Prometheus allows.

Gauges that describe live objects (streams open, the pool, runs in progress) are read at
scrape time from the objects themselves through ``Readings``, so nothing has to keep them in
step. Label values that come from users (a model name) are capped: beyond ``LABEL_VALUES_MAX``
distinct values a label reads ``other``, so a tenant cannot grow the series without bound.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

LABEL_VALUES_MAX: Final = 50
# The classic text format every Prometheus reads (Litestar adds the charset).
CONTENT_TYPE: Final = "text/plain; version=0.0.4"

# Latency bounds in seconds: sub-millisecond steps where the log's commits and the stream's
# sends live, then up to the long tails of a model call or a whole run.
FAST_BUCKETS: Final = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
SLOW_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class _Child:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class _HistogramChild:
    __slots__ = ("_bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.sum += value


ChildT = TypeVar("ChildT")


class _Family(Generic[ChildT]):
    """A metric with labels: one child per distinct label values, made on first use. A label
    value past the cap shares the ``other`` child, which its own spelling then finds at once."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str],
        make_child: Callable[[], ChildT],
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.label_names = tuple(labels)
        self._caps: dict[int, set[str]] = {}
        self._make_child = make_child
        self._children: dict[tuple[str, ...], ChildT] = {}
        self._unlabelled = make_child()
        if not labels:
            self._children[()] = self._unlabelled

    def labels(self, *values: str) -> ChildT:
        child = self._children.get(values)
        if child is None:
            key = tuple(self._capped(i, v) for i, v in enumerate(values))
            child = self._children.setdefault(key, self._make_child())
            self._children[values] = child
        return child

    def _capped(self, position: int, value: str) -> str:
        seen = self._caps.setdefault(position, set())
        if value in seen:
            return value
        if len(seen) >= LABEL_VALUES_MAX:
            return "other"
        seen.add(value)
        return value

    def _distinct(self) -> Iterator[tuple[tuple[str, ...], ChildT]]:
        """Each child once, under its own label values (not an aliased spelling)."""
        seen: set[int] = set()
        for values, child in list(self._children.items()):
            if id(child) not in seen:
                seen.add(id(child))
                yield values, child


class Counter(_Family[_Child]):
    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labels, _Child)

    def inc(self, amount: float = 1.0) -> None:
        self._unlabelled.value += amount

    def value(self, *values: str) -> float:
        """The current value (0 if never changed): for tests and the benchmarks."""
        child = self._children.get(values)
        return child.value if child is not None else 0.0

    def collect(self) -> Metric:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.label_names)
        for values, child in self._distinct():
            family.add_metric(list(values), child.value)
        return family


class Histogram(_Family[_HistogramChild]):
    def __init__(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        buckets: tuple[float, ...] = FAST_BUCKETS,
    ) -> None:
        self.bounds = tuple(sorted(buckets))
        super().__init__(name, documentation, labels, lambda: _HistogramChild(self.bounds))

    def observe(self, value: float) -> None:
        self._unlabelled.observe(value)

    def count(self, *values: str) -> int:
        child = self._children.get(values)
        return sum(child.counts) if child is not None else 0

    def collect(self) -> Metric:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)
        for values, child in self._distinct():
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, math.inf), list(child.counts), strict=True):
                cumulative += count
                buckets.append((_bound(bound), cumulative))
            family.add_metric(list(values), buckets, child.sum)
        return family


def _bound(value: float) -> str:
    return "+Inf" if value == math.inf else repr(float(value))


Reading = Callable[[], Iterable[tuple[Sequence[str], float]]]


@dataclass(slots=True)
class Gauge:
    """A value set by whoever computes it (``set``) or read at scrape time from the live
    objects registered with ``read_from``; all of them added up per label values."""

    name: str
    documentation: str
    labels: Sequence[str] = ()
    readings: dict[object, Reading] = field(default_factory=dict)
    values: dict[tuple[str, ...], float] = field(default_factory=dict)

    def read_from(self, owner: object, reading: Reading) -> None:
        """Read the value from ``reading`` at every scrape until ``forget(owner)`` (a pool,
        a hub: whatever goes away with its reading)."""
        self.readings[owner] = reading

    def forget(self, owner: object) -> None:
        self.readings.pop(owner, None)

    def set(self, value: float, *labels: str) -> None:
        self.values[labels] = value

    def value(self, *labels: str) -> float:
        return self._totals().get(labels, 0.0)

    def _totals(self) -> dict[tuple[str, ...], float]:
        totals = dict(self.values)
        for reading in list(self.readings.values()):
            for values, value in reading():
                key = tuple(values)
                totals[key] = totals.get(key, 0.0) + value
        return totals

    def collect(self) -> Metric:
        family = GaugeMetricFamily(self.name, self.documentation, labels=list(self.labels))
        for values, value in self._totals().items():
            family.add_metric(list(values), value)
        return family


_ALL: list[Counter | Histogram | Gauge] = []


def _counter(name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
    metric = Counter(name, documentation, labels)
    _ALL.append(metric)
    return metric


def _histogram(
    name: str,
    documentation: str,
    labels: Sequence[str] = (),
    buckets: tuple[float, ...] = FAST_BUCKETS,
) -> Histogram:
    metric = Histogram(name, documentation, labels, buckets)
    _ALL.append(metric)
    return metric


def _gauge(name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
    metric = Gauge(name, documentation, labels)
    _ALL.append(metric)
    return metric


# --- the log ------------------------------------------------------------------------------------
EVENTS_APPENDED = _counter("genstream_events_appended", "Events appended, by type.", ["type"])
APPEND_SECONDS = _histogram(
    "genstream_append_duration_seconds",
    "One append's statement, sent to committed (a grouped append: its group's statement).",
)
APPEND_GROUP_SIZE = _histogram(
    "genstream_append_group_appends",
    "Appends a worker's appender sent as one statement and one commit (a group).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
APPEND_RETRIES = _counter(
    "genstream_append_retries", "Appends tried again, by cause (unavailable: no PostgreSQL).",
    ["cause"],
)  # fmt: skip
NOTIFIES_SENT = _counter("genstream_notifies_sent", "NOTIFYs sent (one per committed append).")
IDEMPOTENT_REPLAYS = _counter(
    "genstream_append_idempotent_replays",
    "Appends found already committed by their idempotency keys (a retry after a lost COMMIT).",
)
APPENDS_FENCED = _counter(
    "genstream_appends_fenced",
    "Appends refused: lease_lost (another attempt holds the run) or finished.",
    ["reason"],
)

# --- streams ------------------------------------------------------------------------------------
STREAMS_OPEN = _gauge("genstream_streams_open", "SSE streams open in this process.")
STREAMS_OPENED = _counter("genstream_streams_opened", "SSE streams opened (answered 200).")
STREAMS_CLOSED = _counter(
    "genstream_streams_closed",
    "SSE streams ended, by reason: terminal, client_gone, shutdown, ended, max_age, error.",
    ["reason"],
)
STREAMS_REFUSED = _counter(
    "genstream_streams_refused",
    "Streams refused before opening: quota (429), unauthorized (401).",
    ["reason"],
)
DELIVERY_LAG = _histogram(
    "genstream_delivery_lag_seconds",
    "From an event's append (its row's created_at, taken in the append's statement just "
    "before COMMIT) to the write of its frame, for events appended after the stream opened; "
    "one observation per write, for the oldest such event in it.",
)
# Finer than FAST_BUCKETS from 0.5 to 5 ms, where the stream path's own p99 lives (its goal:
# 2 ms at 1,000 streams @ 1,000 ev/s), so quantiles interpolated from them say which side.
WRITE_LAG_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
STREAM_WRITE_LAG = _histogram(
    "genstream_stream_write_lag_seconds",
    "From the arrival of the notification announcing an event (PostgreSQL sends it at the "
    "commit) to the write of its frame: the stream path's own share of a delivery, apart from "
    "the commit's WAL flush; one observation per write at the live edge, for the oldest "
    "announced event in it.",
    buckets=WRITE_LAG_BUCKETS,
)
CATCHUP_PAGES = _counter(
    "genstream_catchup_pages", "Pages a stream read on its own (behind the live edge)."
)
CATCHUP_EVENTS = _counter("genstream_catchup_events", "Events read by those pages.")
EDGE_READS = _counter(
    "genstream_live_edge_reads", "Shared reads at a generation's live edge (one for all followers)."
)
REPLICA_READS = _counter(
    "genstream_replica_reads",
    "Lag-aware reads by where they were answered: `replica` (at once), `replica_waited` (after "
    "waiting for its replay), `primary` (the standby lagged past the wait: a fallback).",
    ("answered",),
)
LOST_WAKEUPS = _counter(
    "genstream_lost_wakeups", "Generations the periodic check found behind their log."
)
LISTENER_RECONNECTS = _counter(
    "genstream_listener_reconnects", "Times the LISTEN connection was made again after a loss."
)
KEEPALIVES_SENT = _counter("genstream_keepalives_sent", "Keepalive comments written to streams.")
FRAMES_SENT = _counter("genstream_frames_sent", "Event frames written to streams.")
SNAPSHOTS_SENT = _counter(
    "genstream_snapshots_sent", "Snapshot frames written (streams and events pages)."
)

# --- runs ---------------------------------------------------------------------------------------
RUNS_RETRIED = _counter(
    "genstream_runs_retried", "Failed or cancelled runs their owners asked to run again."
)
RUNS_FINISHED = _counter(
    "genstream_runs_finished",
    "Runs this process ended, by outcome: succeeded, failed, cancelled.",
    ["outcome"],
)
RUN_SECONDS = _histogram(
    "genstream_run_duration_seconds",
    "From a generation's creation to its terminal event, by outcome.",
    ["outcome"],
    SLOW_BUCKETS,
)
PHASE_SECONDS = _histogram(
    "genstream_phase_duration_seconds", "A completed phase, by phase.", ["phase"], SLOW_BUCKETS
)
CLAIMS = _counter("genstream_claims", "Runs claimed by this process (first claims and resumes).")
RESUMES = _counter("genstream_resumes", "Claims that resumed a run another attempt had started.")
LEASES_LOST = _counter(
    "genstream_lease_renewals_missed",
    "Runs stopped because a renewal found their lease taken (the worker was too slow or away).",
)
LEASE_RENEWAL_FAILURES = _counter(
    "genstream_lease_renewal_failures",
    "Lease renewals that failed (PostgreSQL unreachable, or an error: tried again next time).",
)
RUNS_ACTIVE = _gauge("genstream_runs_active", "Runs executing in this process.")
QUEUE_DEPTH = _gauge(
    "genstream_queue_depth",
    "Generations queued and not yet claimed, by owner class (admin, standard).",
    ["owner_class"],
)
QUEUE_OLDEST_AGE = _gauge(
    "genstream_queue_oldest_age_seconds",
    "Age of the oldest unclaimed generation, by owner class.",
    ["owner_class"],
)
QUEUE_WAIT = _histogram(
    "genstream_queue_wait_seconds", "From creation to first claim.", buckets=SLOW_BUCKETS
)

# --- the model ----------------------------------------------------------------------------------
MODEL_CALLS = _counter(
    "genstream_model_calls",
    "Model answers asked for, by outcome: ok, broken (stream broke mid-answer), error.",
    ["provider", "model", "outcome"],
)
MODEL_RETRIES = _counter(
    "genstream_model_retries",
    "Model requests tried again before any text, by kind: api, timeout, connection.",
    ["provider", "model", "kind"],
)
MODEL_FAILURES = _counter(
    "genstream_model_failures",
    "Failed model requests (retried or not), by kind: api, timeout, connection, unexpected, "
    "blocked.",
    ["provider", "model", "kind"],
)
MODEL_TOKENS = _counter(
    "genstream_model_tokens",
    "Tokens reported by the provider, by direction: in (prompt) and out (answer).",
    ["provider", "model", "direction"],
)
MODEL_FIRST_TOKEN = _histogram(
    "genstream_model_first_token_seconds",
    "From asking for an answer to its first text.",
    ["provider", "model"],
    SLOW_BUCKETS,
)

# --- the database -------------------------------------------------------------------------------
POOL_CONNECTIONS = _gauge(
    "genstream_db_pool_connections", "Pooled connections, by state: idle, in_use.", ["state"]
)
POOL_MAX = _gauge("genstream_db_pool_max_connections", "The pool's size limit.")
POOL_WAITING = _gauge(
    "genstream_db_pool_waiting", "Tasks waiting for a pooled connection right now."
)
DB_UNREACHABLE = _counter(
    "genstream_db_unreachable_seconds",
    "Seconds the LISTEN connection could not reach PostgreSQL (counted when it is back).",
)
DB_UP = _gauge("genstream_db_up", "1 while the LISTEN connection is up, else 0.")

# --- HTTP ---------------------------------------------------------------------------------------
HTTP_REQUESTS = _counter(
    "genstream_http_requests", "Responses, by method, route and status.",
    ["method", "route", "status"],
)  # fmt: skip
CONNECTIONS_REFUSED = _counter(
    "genstream_connections_refused",
    "Requests answered 503 because the process held GENSTREAM_MAX_CONNECTIONS connections.",
)
HTTP_SECONDS = _histogram(
    "genstream_http_request_duration_seconds",
    "Request to response start (a stream's first byte, not its end), by route.",
    ["route"],
)


class _Collector(Collector):
    def collect(self) -> Iterable[Metric]:
        for metric in _ALL:
            yield metric.collect()


REGISTRY: Final = CollectorRegistry(auto_describe=False)
REGISTRY.register(_Collector())


# The process's CPU seconds, memory and open files, as prometheus-client reads them.
ProcessCollector(registry=REGISTRY)


def render() -> bytes:
    """Every metric of this process in Prometheus' text format."""
    return generate_latest(REGISTRY)


def names() -> list[str]:
    """Every genstream metric's name (counters without their ``_total``)."""
    return [metric.name for metric in _ALL]


def serve_metrics(address: str) -> None:
    """Serve ``/metrics`` (no key asked) on ``host:port`` from a daemon thread, for the
    operator's scraper on a private address; prometheus-client's own small HTTP server."""
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=REGISTRY)  # noqa: S104
