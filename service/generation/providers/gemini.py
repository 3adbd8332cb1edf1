"""Google Gemini through the google-genai SDK (the only module that imports it).

One ``stream()`` call is one answer: the SDK's streaming call, retried by ``network.retrying``
(never by the SDK) with exponential backoff and full jitter on 429, 5xx, connection errors and
timeouts, but only while no text has been yielded. Once text is out, any failure is a
``StreamBroken``: half an answer cannot be resumed, the caller restarts the phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from service.generation.providers import Prompt, ProviderError, Retrying, Usage, network
from service.generation.providers.network import Failure, Retries

TEMPERATURE = 0.2
# Deadline for a whole answer announced to Gemini's servers (X-Server-Timeout), in seconds.
SERVER_DEADLINE_S = 600

_TIMEOUTS = network.timeouts()
_CONNECTION_ERRORS = network.connection_errors()


class GeminiProvider:
    """Streams one answer per ``stream()`` call.

    Each call owns its own SDK client and closes it when the call ends, however it ends. The
    SDK's stream cannot be closed from outside: closing its generator early leaves the HTTP
    response in a reference cycle, open until the garbage collector runs; closing the client
    closes that connection at once.
    """

    name = "gemini"
    repairs = True

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
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.model = model
        self._api_key = api_key
        self._base_url = base_url
        self._timeout_s = timeout_s
        self._retries = Retries(attempts, backoff_s, backoff_max_s)

    def _new_client(self) -> genai.Client:
        tls = network.tls_context()
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

    async def stream(self, prompt: Prompt) -> AsyncIterator[str | Usage | Retrying]:
        config = types.GenerateContentConfig(
            system_instruction=prompt.system or None,
            temperature=TEMPERATURE,
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
            # A broken stream is reported (StreamBroken), never silently resumed.
            automatic_continuation=False,
        )
        client = self._new_client()
        try:
            answer = network.retrying(
                lambda: self._attempt(client, prompt, config),
                provider=self.name,
                model=self.model,
                label="Gemini",
                retries=self._retries,
            )
            async with contextlib.aclosing(answer) as items:
                async for item in items:
                    yield item
        finally:
            try:
                await client.aio.aclose()
            finally:
                client.close()

    async def _attempt(
        self, client: genai.Client, prompt: Prompt, config: types.GenerateContentConfig
    ) -> AsyncGenerator[str | Usage, None]:
        """One request: its text chunks and usage reports as they come. Every failure is a
        ``Failure``, except a blocked prompt: a ProviderError, since no retry can help."""
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

    def _failure(self, exc: Exception) -> Failure:
        if isinstance(exc, genai_errors.APIError):
            summary = f"{exc.code} {exc.status}" if exc.status else str(exc.code)
            if exc.message:
                summary = f"{summary}: {exc.message}"
            retryable = exc.code == 429 or exc.code >= 500
            return Failure(summary, retryable=retryable, kind="api")
        if isinstance(exc, _TIMEOUTS):
            summary = f"Gemini did not answer within {self._timeout_s:g}s"
            return Failure(summary, retryable=True, kind="timeout")
        if isinstance(exc, _CONNECTION_ERRORS):
            reason = str(exc) or type(exc).__name__
            return Failure(f"connection failed ({reason})", retryable=True, kind="connection")
        summary = f"{type(exc).__name__}: {exc}"
        return Failure(summary, retryable=False, kind="unexpected")


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
