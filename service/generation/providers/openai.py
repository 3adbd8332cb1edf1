"""Any OpenAI-compatible chat-completions API through the openai SDK (the only module that
imports it): OpenAI itself, Azure, OpenRouter, or a local vLLM, Ollama or LM Studio.

One ``stream()`` call is one answer: ``chat.completions.create(stream=True)`` asking for a
final usage chunk, retried by ``network.retrying`` (never by the SDK: ``max_retries=0``) with
exponential backoff and full jitter on 429, 5xx, connection errors and timeouts, but only while
no text has been yielded. Once text is out, any failure is a ``StreamBroken``.

(This module's name does not shadow the SDK: imports are absolute, so ``import openai`` below
is the installed package.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from http import HTTPStatus
from typing import Any

import openai
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from service.generation.providers import Prompt, ProviderError, Retrying, Usage, network
from service.generation.providers.network import Failure, Retries

TEMPERATURE = 0.2
LABEL = "OpenAI-compatible API"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
# Sent when no key is configured: the SDK insists on one, local servers ignore it.
PLACEHOLDER_KEY = "unused"
# Longest part of a non-JSON error body (an HTML page from a proxy, say) quoted in a message.
BODY_QUOTE_CHARS = 200
MIN_HIDDEN_KEY_CHARS = 8

# The SDK wraps what its HTTP stack raises; older versions let a failure mid-stream through.
_TIMEOUTS: tuple[type[BaseException], ...] = (openai.APITimeoutError, *network.timeouts())
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    openai.APIConnectionError,
    *network.connection_errors(),
)


class OpenAIProvider:
    """Streams one answer per ``stream()`` call.

    Each call owns its own SDK client and closes it when the call ends, however it ends, so a
    consumer that stops reading early hangs up on the server at once. The clients share one
    TLS context (network.tls_context): each would otherwise load the trust store again.
    """

    name = "openai"
    repairs = True

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 60,
        attempts: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.model = model
        self._base_url = base_url or DEFAULT_BASE_URL
        self._api_key = api_key
        self._timeout_s = timeout_s
        self._retries = Retries(attempts, backoff_s, backoff_max_s)

    def _new_client(self) -> openai.AsyncOpenAI:
        # Key and URL are always given, so the SDK never takes OPENAI_API_KEY or
        # OPENAI_BASE_URL from the environment instead.
        return openai.AsyncOpenAI(
            api_key=self._api_key or PLACEHOLDER_KEY,
            base_url=self._base_url,
            # Ours alone: only we know whether text has already gone out.
            max_retries=0,
            # Connecting, and each read: the SDK's timeout is per read, not per answer.
            timeout=self._timeout_s,
            http_client=openai.DefaultAsyncHttpxClient(verify=network.tls_context()),
        )

    async def stream(self, prompt: Prompt) -> AsyncIterator[str | Usage | Retrying]:
        messages: list[ChatCompletionMessageParam] = []
        if prompt.system:
            messages.append({"role": "system", "content": prompt.system})
        messages.append({"role": "user", "content": prompt.user})
        client = self._new_client()
        try:
            answer = network.retrying(
                lambda: self._attempt(client, messages),
                provider=self.name,
                model=self.model,
                label=LABEL,
                retries=self._retries,
            )
            async with contextlib.aclosing(answer) as items:
                async for item in items:
                    yield item
        finally:
            await client.close()

    async def _attempt(
        self, client: openai.AsyncOpenAI, messages: list[ChatCompletionMessageParam]
    ) -> AsyncGenerator[str | Usage, None]:
        """One request: its text chunks and usage reports as they come. Every failure is a
        ``Failure``, except a refusal without text: a ProviderError, since no retry can help."""
        chunks: openai.AsyncStream[ChatCompletionChunk] | None = None
        try:
            try:
                async with asyncio.timeout(self._timeout_s):
                    chunks = await client.chat.completions.create(
                        model=self.model,
                        messages=messages,
                        temperature=TEMPERATURE,
                        stream=True,
                        # A last chunk with no choices and the usage; servers that ignore
                        # it leave us counting 0 tokens, never failing.
                        stream_options={"include_usage": True},
                    )
                texted, refusal = False, ""
                while True:
                    try:
                        async with asyncio.timeout(self._timeout_s):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    if (usage := _usage(chunk)) is not None:
                        yield usage
                    content, refused = _delta(chunk)
                    refusal += refused
                    if content:
                        texted = True
                        yield content
                if refusal and not texted:
                    raise ProviderError(f"The model refused: {refusal}")
            finally:
                if chunks is not None:
                    await chunks.close()
        except ProviderError:
            raise
        except Exception as exc:
            raise self._failure(exc) from exc

    def _failure(self, exc: Exception) -> Failure:
        # Timeouts first: the SDK's timeout error is a kind of connection error.
        if isinstance(exc, _TIMEOUTS):
            summary = f"{LABEL} did not answer within {self._timeout_s:g}s"
            return Failure(summary, retryable=True, kind="timeout")
        if isinstance(exc, _CONNECTION_ERRORS):
            cause = exc.__cause__ if isinstance(exc, openai.APIConnectionError) else exc
            reason = str(cause or exc) or type(cause or exc).__name__
            return Failure(f"connection failed ({reason})", retryable=True, kind="connection")
        if isinstance(exc, openai.APIStatusError):
            summary = self._hide_key(_status_summary(exc.status_code, exc))
            retryable = exc.status_code == 429 or exc.status_code >= 500
            return Failure(summary, retryable=retryable, kind="api")
        if isinstance(exc, openai.APIError):
            # An error event inside a stream that began with 200: its code, when there is one,
            # is the HTTP status the failure would have had.
            # (A string in newer SDKs, the JSON's number in older ones.)
            code = str(exc.code) if exc.code is not None else ""
            status = int(code) if code.isdigit() else None
            summary = self._hide_key(_status_summary(status, exc))
            retryable = status is not None and (status == 429 or status >= 500)
            return Failure(summary, retryable=retryable, kind="api")
        summary = self._hide_key(f"{type(exc).__name__}: {exc}")
        return Failure(summary, retryable=False, kind="unexpected")

    def _hide_key(self, text: str) -> str:
        """Servers quote a rejected key back (OpenAI masks most of it; others may not): the
        text becomes the run's failure reason, shown to users and logged. (A "key" of a few
        characters is no secret, and replacing it would garble the text.)"""
        if self._api_key is None or len(self._api_key) < MIN_HIDDEN_KEY_CHARS:
            return text
        return text.replace(self._api_key, "***")


def _status_summary(status: int | None, exc: openai.APIError) -> str:
    """``401 invalid_api_key: Incorrect API key provided`` from what the server said."""
    kind = exc.code if exc.code is not None else exc.type
    parts = [str(status)] if status is not None else []
    if kind is not None and str(kind) not in ("", *parts):
        parts.append(str(kind))
    head = " ".join(parts)
    message = _server_message(exc.body)
    if not message:
        message = _phrase(status) if status is not None else exc.message
    return f"{head}: {message}" if head else message


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "no message"


def _server_message(body: object) -> str:
    """The message of an error body: OpenAI's ``{"error": {"message": ...}}`` (the SDK has
    already unwrapped "error"), vLLM's top-level ``message``, a bare string, or raw text."""
    if isinstance(body, Mapping):
        message = body.get("message") or body.get("error") or body.get("detail")
        return message if isinstance(message, str) else ""
    if isinstance(body, str):
        text = " ".join(body.split())
        return text if len(text) <= BODY_QUOTE_CHARS else text[:BODY_QUOTE_CHARS] + "…"
    return ""


def _delta(chunk: ChatCompletionChunk) -> tuple[str, str]:
    """The answer text and refusal text of the first choice in a chunk. The SDK builds chunks
    without validating them, so a field a server leaves out is absent, not None."""
    for choice in getattr(chunk, "choices", None) or ():
        if getattr(choice, "index", 0) != 0:
            continue
        delta: Any = getattr(choice, "delta", None)
        content = getattr(delta, "content", None)
        refusal = getattr(delta, "refusal", None)
        return (
            content if isinstance(content, str) else "",
            refusal if isinstance(refusal, str) else "",
        )
    return "", ""


def _usage(chunk: ChatCompletionChunk) -> Usage | None:
    usage: Any = getattr(chunk, "usage", None)
    if usage is None:
        return None
    return Usage(
        prompt_tokens=getattr(usage, "prompt_tokens", None) or 0,
        output_tokens=getattr(usage, "completion_tokens", None) or 0,
    )
