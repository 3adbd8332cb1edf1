"""Google Gemini through the google-genai SDK (the only module that imports it).

One ``stream()`` call is one answer: the SDK's streaming call, retried here (never by the SDK)
with exponential backoff and full jitter on 429, 5xx, connection errors and timeouts, but only
while no text has been yielded. Once text is out, any failure is a ``StreamBroken``: half an
answer cannot be resumed, the caller restarts the phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import random
import ssl
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from service.generation.providers import Prompt, ProviderError, StreamBroken, Usage
from service.observe import metrics
from service.observe.logs import get_logger

log = get_logger(__name__)

TEMPERATURE = 0.2
# Deadline for a whole answer announced to Gemini's servers (X-Server-Timeout), in seconds.
SERVER_DEADLINE_S = 600


def _exception_classes(*names: tuple[str, str]) -> tuple[type[BaseException], ...]:
    """Exception classes of the HTTP stacks the SDK has loaded (httpx2 by default; httpx or
    aiohttp when present), which it lets through unwrapped."""
    found: list[type[BaseException]] = []
    for module_name, class_name in names:
        cls = getattr(sys.modules.get(module_name), class_name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


_TIMEOUTS: tuple[type[BaseException], ...] = (
    TimeoutError,
    *_exception_classes(("httpx2", "TimeoutException"), ("httpx", "TimeoutException")),
)
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,
    *_exception_classes(
        ("httpx2", "TransportError"), ("httpx", "TransportError"), ("aiohttp", "ClientError")
    ),
)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The system trust store (honours SSL_CERT_FILE / SSL_CERT_DIR), built once."""
    return ssl.create_default_context()


class _Failure(Exception):
    """One attempt failed: what happened, and whether trying again could help."""

    def __init__(self, summary: str, *, retryable: bool, kind: str) -> None:
        super().__init__(summary)
        self.summary = summary
        self.retryable = retryable
        self.kind = kind  # "api", "timeout", "connection" or "unexpected"

    def after_text(self) -> StreamBroken:
        return StreamBroken(f"Gemini's stream broke after the answer had started: {self.summary}")

    def at_once(self) -> ProviderError:
        if self.kind == "api":
            return ProviderError(f"Gemini rejected the request: {self.summary}")
        return ProviderError(f"Gemini call failed: {self.summary}")

    def exhausted(self, attempts: int) -> ProviderError:
        if self.kind == "timeout":
            return ProviderError(f"{self.summary} ({attempts} attempts)")
        return ProviderError(f"Gemini kept failing: {self.summary} ({attempts} attempts)")


class GeminiProvider:
    """Streams one answer per ``stream()`` call.

    Each call owns its own SDK client and closes it when the call ends, however it ends. The
    SDK's stream cannot be closed from outside: closing its generator early leaves the HTTP
    response in a reference cycle, open until the garbage collector runs; closing the client
    closes that connection at once.
    """

    name = "gemini"

    def __init__(
        self,
        *,
        api_key: str,
        model: str,
        base_url: str | None = None,
        timeout_s: float = 60,
        attempts: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.model = model
        self._api_key = api_key
        self._base_url = base_url
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s

    def _new_client(self) -> genai.Client:
        tls = _tls_context()
        return genai.Client(
            api_key=self._api_key,
            http_options=types.HttpOptions(
                base_url=self._base_url,
                # Milliseconds; the HTTP client applies it to connecting and to each read.
                timeout=max(1, math.ceil(self._timeout_s * 1000)),
                # The SDK would also announce that timeout as the server's deadline for the
                # whole answer: a long answer must not be cut off by a per-chunk limit.
                headers={
                    "X-Server-Timeout": str(max(SERVER_DEADLINE_S, math.ceil(self._timeout_s)))
                },
                # None: the SDK never retries by itself. Retrying is ours, because only we
                # know whether text has already gone out.
                retry_options=None,
                # One TLS context for all clients: building one costs ~20 ms of blocked loop.
                client_args={"verify": tls},
                async_client_args={"verify": tls, "ssl": tls},
            ),
        )

    async def stream(self, prompt: Prompt) -> AsyncIterator[str | Usage]:
        config = types.GenerateContentConfig(
            system_instruction=prompt.system or None,
            temperature=TEMPERATURE,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            # A broken stream is reported (StreamBroken), never silently resumed.
            automatic_continuation=False,
        )
        client = self._new_client()
        try:
            attempt = 0
            while True:
                attempt += 1
                yielded_text = False
                usage = Usage()
                try:
                    async with contextlib.aclosing(self._attempt(client, prompt, config)) as items:
                        async for item in items:
                            if isinstance(item, Usage):
                                usage = item
                            else:
                                yielded_text = True
                                yield item
                except ProviderError:  # a blocked prompt: no retry can help
                    metrics.MODEL_FAILURES.labels(self.name, self.model, "blocked").inc()
                    raise
                except _Failure as failure:
                    metrics.MODEL_FAILURES.labels(self.name, self.model, failure.kind).inc()
                    if yielded_text:
                        raise failure.after_text() from failure.__cause__
                    if not failure.retryable:
                        raise failure.at_once() from failure.__cause__
                    if attempt >= self._attempts:
                        raise failure.exhausted(attempt) from failure.__cause__
                    cap = min(self._backoff_max_s, self._backoff_s * 2 ** (attempt - 1))
                    delay = random.uniform(0, cap)
                    metrics.MODEL_RETRIES.labels(self.name, self.model, failure.kind).inc()
                    log.warning(
                        "model.retry",
                        provider=self.name,
                        model=self.model,
                        # Not "attempt": that names the run's claim on every line of a run.
                        request=attempt,
                        requests_max=self._attempts,
                        kind=failure.kind,
                        reason=failure.summary,
                        wait_s=round(delay, 2),
                    )
                    await asyncio.sleep(delay)
                    continue
                yield usage
                return
        finally:
            try:
                await client.aio.aclose()
            finally:
                client.close()

    async def _attempt(
        self, client: genai.Client, prompt: Prompt, config: types.GenerateContentConfig
    ) -> AsyncGenerator[str | Usage, None]:
        """One request: its text chunks and usage reports as they come. Every failure is a
        ``_Failure``, except a blocked prompt: a ProviderError, since no retry can help."""
        chunks: AsyncIterator[types.GenerateContentResponse] | None = None
        try:
            try:
                async with asyncio.timeout(self._timeout_s):
                    chunks = await client.aio.models.generate_content_stream(
                        model=self.model, contents=prompt.user, config=config
                    )
                while True:
                    try:
                        async with asyncio.timeout(self._timeout_s):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        return
                    _raise_if_blocked(chunk)
                    if chunk.usage_metadata is not None:
                        yield _usage(chunk.usage_metadata)
                    if text := _text(chunk):
                        yield text
            finally:
                if chunks is not None:
                    await _close(chunks)
        except ProviderError:
            raise
        except Exception as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: Exception) -> _Failure:
        if isinstance(exc, genai_errors.APIError):
            summary = f"{exc.code} {exc.status}" if exc.status else str(exc.code)
            if exc.message:
                summary = f"{summary}: {exc.message}"
            retryable = exc.code == 429 or exc.code >= 500
            return _Failure(summary, retryable=retryable, kind="api")
        if isinstance(exc, _TIMEOUTS):
            summary = f"Gemini did not answer within {self._timeout_s:g}s"
            return _Failure(summary, retryable=True, kind="timeout")
        if isinstance(exc, _CONNECTION_ERRORS):
            reason = str(exc) or type(exc).__name__
            return _Failure(f"connection failed ({reason})", retryable=True, kind="connection")
        summary = f"{type(exc).__name__}: {exc}"
        return _Failure(summary, retryable=False, kind="unexpected")


def _raise_if_blocked(chunk: types.GenerateContentResponse) -> None:
    feedback = chunk.prompt_feedback
    if feedback is None or feedback.block_reason is None:
        return
    reason = getattr(feedback.block_reason, "value", feedback.block_reason)
    message = f"Gemini blocked the prompt ({reason})"
    if feedback.block_reason_message:
        message += f": {feedback.block_reason_message}"
    raise ProviderError(message)


def _text(chunk: types.GenerateContentResponse) -> str:
    """The answer text in a chunk (first candidate; thoughts left out). A chunk that only
    carries a finish reason (STOP, SAFETY, RECITATION, ...) has none."""
    if not chunk.candidates:
        return ""
    content = chunk.candidates[0].content
    if content is None or not content.parts:
        return ""
    return "".join(part.text for part in content.parts if part.text and not part.thought)


def _usage(metadata: types.GenerateContentResponseUsageMetadata) -> Usage:
    output = (metadata.candidates_token_count or 0) + (metadata.thoughts_token_count or 0)
    return Usage(prompt_tokens=metadata.prompt_token_count or 0, output_tokens=output)


async def _close(chunks: AsyncIterator[Any]) -> None:
    """Close the SDK's outer generator. Its inner generators and HTTP response stay open
    (a reference cycle) until the client is closed, which ``stream()`` does."""
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        await aclose()
