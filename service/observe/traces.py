"""OpenTelemetry traces: optional (the ``otel`` install extra), off unless configured.

A generation is one trace: the span of the request that created it, then a ``run`` span per
claim (its parent is the creating request's context, kept with the run in the database, so a
run resumed by another process continues the same trace), with ``phase``, ``model.call`` and
``append`` spans inside. A request that arrives with a W3C ``traceparent`` continues the
caller's trace.

Off (the default, or without the extra installed), ``span`` hands back one shared no-op
context manager: a function call and a flag test on the hot paths, nothing more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Tracer

_NOTHING: Final = contextlib.nullcontext()
_tracer: Tracer | None = None


def enabled() -> bool:
    return _tracer is not None


def configure(exporter: str | None, endpoint: str | None, service_name: str) -> bool:
    """Turn tracing on when the standard variables ask for it: ``OTEL_TRACES_EXPORTER``
    (``otlp`` or ``console``; ``none`` keeps it off) or an ``OTEL_EXPORTER_OTLP_ENDPOINT``.
    The exporter reads the rest of its ``OTEL_*`` variables itself (headers, timeouts).
    Returns whether tracing is on."""
    if exporter in (None, "") and not endpoint:
        return False
    if exporter == "none":
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    span_exporter: Any
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES over this default.
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    use(provider)
    return True


def use(provider: TracerProvider | None) -> None:
    """Trace through ``provider`` (None: stop tracing). Tests pass one with an in-memory
    exporter."""
    global _tracer
    _tracer = provider.get_tracer("genstream") if provider is not None else None


def span(name: str, **attributes: object) -> contextlib.AbstractContextManager[Any]:
    """A span around a block, child of the current one; a no-op while tracing is off.
    Attributes other than text and numbers (a UUID) are turned into text only when tracing
    is on: the hot paths pass them as they are and pay nothing for them otherwise."""
    if _tracer is None:
        return _NOTHING
    return _tracer.start_as_current_span(name, attributes=_attributes(attributes))


def _attributes(attributes: Mapping[str, object]) -> dict[str, str | int | float | bool]:
    return {
        key: value if isinstance(value, str | int | float | bool) else str(value)
        for key, value in attributes.items()
    }


def continuing(
    name: str, carrier: Mapping[str, str] | None, **attributes: object
) -> contextlib.AbstractContextManager[Any]:
    """A span whose parent is the context in ``carrier`` (W3C headers: ``traceparent``), or
    a new trace without one; while tracing is off, the shared no-op (a request's, held as
    long as its stream: a generator's context manager was ~450 B of every idle stream)."""
    if _tracer is None:
        return _NOTHING
    return _continuing(_tracer, name, carrier, attributes)


@contextlib.contextmanager
def _continuing(
    tracer: Tracer, name: str, carrier: Mapping[str, str] | None, attributes: Mapping[str, object]
) -> Iterator[Any]:
    from opentelemetry.propagate import extract

    context = extract(dict(carrier)) if carrier else None
    with tracer.start_as_current_span(
        name, context=context, attributes=_attributes(attributes)
    ) as current:
        yield current


def current_carrier() -> dict[str, str] | None:
    """The current span's context as W3C headers, to be kept with a run (None: no tracing)."""
    if _tracer is None:
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier or None


def set_attributes(current: Any, **attributes: str | int | float | bool) -> None:
    """Attributes learnt after a span started (a response's status, a run's outcome)."""
    if current is not None:
        current.set_attributes(attributes)
