"""What the providers that ask a model over the network share: the retry policy, the
exception classes of the HTTP stacks their SDKs run on, and one TLS context.

The policy: one answer is one ``retrying()`` call. Each try is a fresh request; a try that
fails with a retryable ``Failure`` (429, 5xx, a connection error, a timeout) is tried again
after an exponential backoff with full jitter, but only while no text has been yielded. Once
text is out, any failure is a ``StreamBroken``: half an answer cannot be resumed, the caller
restarts the phase. The SDKs never retry by themselves; only this loop knows whether text has
already gone out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl
import sys
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from service.generation.providers import ProviderError, Retrying, StreamBroken, Usage
from service.observe import metrics
from service.observe.logs import get_logger

log = get_logger(__name__)


def exception_classes(*names: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """Exception classes of the HTTP stacks an SDK has loaded (httpx2, httpx, aiohttp), found
    by name so that none of them has to be installed."""
    found: list[type[BaseException]] = []
    for module_name, class_name in names:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def timeouts() -> tuple[type[BaseException], ...]:
    """What a timed-out read raises, in whichever stack is loaded (asked after the SDK's
    import, which loads it)."""
    return (
        TimeoutError,
        *exception_classes(("httpx2", "TimeoutException"), ("httpx", "TimeoutException")),
    )


def connection_errors() -> tuple[type[BaseException], ...]:
    """What a refused, reset or cut-short connection raises, in whichever stack is loaded."""
    return (
        ConnectionError,
        *exception_classes(
            ("httpx2", "TransportError"), ("httpx", "TransportError"), ("aiohttp", "ClientError")
        ),
    )


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The system trust store (honours SSL_CERT_FILE / SSL_CERT_DIR), built once: building one
    costs 20-30 ms of blocked event loop, and each SDK client would build its own."""
    return ssl.create_default_context()


class Failure(Exception):
    """One try failed: what happened, and whether trying again could help."""

    def __init__(self, summary: str, *, retryable: bool, kind: str) -> None:
        super().__init__(summary)
        self.summary = summary
        self.retryable = retryable
        self.kind = kind  # "api", "timeout", "connection" or "unexpected"


@dataclass(frozen=True, slots=True)
class Retries:
    """How often one answer is asked for, and how long to wait between the tries."""

    attempts: int = 4
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")

    def delay(self, attempt: int) -> float:
        """Full jitter: anywhere up to the doubled (and capped) backoff after ``attempt``."""
        return random.uniform(0, min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1)))


async def retrying(
    attempt: Callable[[], AsyncGenerator[str | Usage, None]],
    *,
    provider: str,
    model: str,
    label: str,
    retries: Retries,
) -> AsyncGenerator[str | Usage | Retrying, None]:
    """Text chunks of one answer, then exactly one ``Usage`` (the last one a try reported);
    before any text, a ``Retrying`` each time a failed try will be tried again.

    ``attempt()`` makes one request and yields its text and usage reports; it raises a
    ``Failure`` when the request fails, or a ``ProviderError`` when no try can help (a blocked
    prompt). ``label`` names the model's API in the error texts ("Gemini").
    """
    number = 0
    while True:
        number += 1
        yielded_text = False
        usage = Usage()
        try:
            async with contextlib.aclosing(attempt()) as items:
                async for item in items:
                    if isinstance(item, Usage):
                        usage = item
                    else:
                        yielded_text = True
                        yield item
        except ProviderError:
            metrics.MODEL_FAILURES.labels(provider, model, "blocked").inc()
            raise
        except Failure as failure:
            metrics.MODEL_FAILURES.labels(provider, model, failure.kind).inc()
            if yielded_text:
                raise StreamBroken(
                    f"{label}'s stream broke after the answer had started: {failure.summary}"
                ) from failure.__cause__
            if not failure.retryable:
                if failure.kind == "api":
                    message = f"{label} rejected the request: {failure.summary}"
                else:
                    message = f"{label} call failed: {failure.summary}"
                raise ProviderError(message) from failure.__cause__
            if number >= retries.attempts:
                if failure.kind == "timeout":  # the summary already names the API
                    message = f"{failure.summary} ({number} attempts)"
                else:
                    message = f"{label} kept failing: {failure.summary} ({number} attempts)"
                raise ProviderError(message) from failure.__cause__
            delay = retries.delay(number)
            metrics.MODEL_RETRIES.labels(provider, model, failure.kind).inc()
            log.warning(
                "model.retry",
                provider=provider,
                model=model,
                # Not "attempt": that names the run's claim on every line of a run.
                request=number,
                requests_max=retries.attempts,
                kind=failure.kind,
                reason=failure.summary,
                wait_s=round(delay, 2),
            )
            yield Retrying(number, retries.attempts, round(delay, 2), failure.summary)
            await asyncio.sleep(delay)
            continue
        yield usage
        return
