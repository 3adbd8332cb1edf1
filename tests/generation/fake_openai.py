"""A fake OpenAI-compatible chat-completions API over real HTTP, for pointing the real openai
SDK at in tests.

``async with FakeOpenAI() as fake:`` serves it on a free port in the running event loop
(``fake_server.ScriptedServer``); the SDK's base URL is ``fake.api_url`` (``.../v1``).
``fake.script(...)`` queues what the next requests to ``POST /v1/chat/completions`` get, one
behaviour per request and in order; ``fake.requests`` records every request. A request that
finds the script empty gets a 500 saying so, so a test that under-scripts fails loudly.

Streams are what OpenAI sends: ``data: <chat.completion.chunk>`` events, the first with the
assistant role, one per text chunk, one with the finish reason, then (only when the request
asked with ``stream_options.include_usage``) a chunk with no choices and the usage, then
``data: [DONE]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.generation.fake_server import Exchange, RecordedRequest, ScriptedServer

ENDPOINT = "/chat/completions"
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}


@dataclass(frozen=True)
class Stream:
    """A successful answer, one chunk per text. ``usage=False``: a server that never sends
    usage, even when asked. ``delay_s`` pauses before every chunk after the first."""

    chunks: list[str]
    prompt_tokens: int = 11
    output_tokens: int = 42
    usage: bool = True
    delay_s: float = 0.0
    finish_reason: str = "stop"


@dataclass(frozen=True)
class Fail:
    """An HTTP error with OpenAI's JSON error body."""

    status: int
    message: str = "The fake OpenAI API was told to fail this request."
    code: str | None = None


@dataclass(frozen=True)
class Drop:
    """Send these chunks (no finish reason, no [DONE]), then break the connection mid-body."""

    chunks: list[str]


@dataclass(frozen=True)
class Hang:
    """Accept the request, then send nothing for ``seconds`` (afterwards: a 504)."""

    seconds: float


@dataclass(frozen=True)
class ErrorEvent:
    """Status 200 and these chunks, then an error event in the stream (what OpenRouter and
    vLLM send when the model fails mid-answer), then [DONE]."""

    chunks: list[str]
    code: int = 502
    message: str = "The upstream model failed mid-answer."


@dataclass(frozen=True)
class Refusal:
    """The model refuses: the refusal text in ``delta.refusal``, no content."""

    text: str = "I'm sorry, I can't help with that."


Behaviour = Stream | Fail | Drop | Hang | ErrorEvent | Refusal


@dataclass(frozen=True)
class OpenAIRequest(RecordedRequest):
    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))

    def text_of(self, role: str) -> str:
        return "".join(m.get("content", "") for m in self.messages if m.get("role") == role)

    @property
    def system_text(self) -> str:
        return self.text_of("system")

    @property
    def user_text(self) -> str:
        return self.text_of("user")

    @property
    def wants_usage(self) -> bool:
        return bool((self.body.get("stream_options") or {}).get("include_usage"))


def error_body(status: int, message: str, code: str | None = None) -> bytes:
    error = {
        "message": message,
        "type": ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error"),
        "param": None,
        "code": code,
    }
    return json.dumps({"error": error}).encode()


def _chunk(model: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }


def _usage(prompt_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": prompt_tokens + output_tokens,
    }


def _sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data)
    return f"data: {text}\n\n".encode()


@dataclass
class FakeOpenAI(ScriptedServer[Behaviour, OpenAIRequest]):
    """The fake server. Use as an async context manager; ``api_url`` is set inside it."""

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    def record(
        self, method: str, path: str, query: str, headers: dict[str, str], body: Any
    ) -> OpenAIRequest:
        return OpenAIRequest(method, path, query, headers, body)

    async def answer(self, exchange: Exchange, request: OpenAIRequest, number: int) -> None:
        if not (request.method == "POST" and request.path.endswith(ENDPOINT)):
            message = f"FakeOpenAI: no such endpoint {request.method} {request.path}"
            await exchange.whole(404, error_body(404, message, "unknown_url"))
            return
        behaviour = self.next_behaviour()
        if behaviour is None:
            message = f"FakeOpenAI: nothing scripted for request {number}"
            await exchange.whole(500, error_body(500, message))
            return
        model = str(request.body.get("model", ""))
        if isinstance(behaviour, Fail):
            body = error_body(behaviour.status, behaviour.message, behaviour.code)
            await exchange.whole(behaviour.status, body)
        elif isinstance(behaviour, Hang):
            if await exchange.pause(behaviour.seconds):
                message = f"FakeOpenAI hung for {behaviour.seconds}s as scripted"
                await exchange.whole(504, error_body(504, message))
            elif not exchange.gone.is_set():
                await exchange.whole(503, error_body(503, "FakeOpenAI is shutting down"))
        elif not request.body.get("stream"):
            await self._whole_completion(exchange, request, behaviour, model)
        elif isinstance(behaviour, Drop):
            await exchange.start(200, b"text/event-stream")
            for text in behaviour.chunks:
                await exchange.body(_sse(_chunk(model, {"content": text})), more=True)
            # Returning with the body unfinished makes uvicorn close the connection: the
            # client sees a chunked body cut short (uvicorn logs that at error level).
        else:
            await self._stream(exchange, request, behaviour, model)

    async def _stream(
        self,
        exchange: Exchange,
        request: OpenAIRequest,
        behaviour: Stream | ErrorEvent | Refusal,
        model: str,
    ) -> None:
        await exchange.start(200, b"text/event-stream; charset=utf-8")
        events: list[dict[str, Any] | str] = [_chunk(model, {"role": "assistant", "content": ""})]
        delay_s = 0.0
        if isinstance(behaviour, Refusal):
            events.append(_chunk(model, {"refusal": behaviour.text}))
            events.append(_chunk(model, {}, "stop"))
        elif isinstance(behaviour, ErrorEvent):
            events += [_chunk(model, {"content": text}) for text in behaviour.chunks]
            error = {"message": behaviour.message, "code": behaviour.code}
            events.append({"error": error})
        else:
            delay_s = behaviour.delay_s
            events += [_chunk(model, {"content": text}) for text in behaviour.chunks]
            events.append(_chunk(model, {}, behaviour.finish_reason))
            if behaviour.usage and request.wants_usage:
                usage = _usage(behaviour.prompt_tokens, behaviour.output_tokens)
                events.append({**_chunk(model, {}), "choices": [], "usage": usage})
        events.append("[DONE]")
        for index, event in enumerate(events):
            if index > 1 and delay_s and not await exchange.pause(delay_s):
                return
            await exchange.body(_sse(event), more=True)
        await exchange.body(b"", more=False)

    async def _whole_completion(
        self, exchange: Exchange, request: OpenAIRequest, behaviour: Behaviour, model: str
    ) -> None:
        """``stream: false``: the whole answer as one chat.completion."""
        if not isinstance(behaviour, Stream):
            message = f"FakeOpenAI: {type(behaviour).__name__} needs stream: true"
            await exchange.whole(400, error_body(400, message))
            return
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(behaviour.chunks)},
                    "finish_reason": behaviour.finish_reason,
                }
            ],
            "usage": _usage(behaviour.prompt_tokens, behaviour.output_tokens),
        }
        await exchange.whole(200, json.dumps(body).encode())
