"""A fake Gemini API over real HTTP, for pointing the real google-genai SDK at in tests.

``async with FakeGemini() as fake:`` serves a small raw-ASGI app with uvicorn on a free port in
the running event loop (``fake_server.ScriptedServer``). ``fake.script(...)`` queues what the
next requests get, one behaviour per request and in order; ``fake.requests`` records every
request. A request that finds the script empty gets a 500 saying so, so a test that
under-scripts fails loudly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tests.generation.fake_server import Exchange, RecordedRequest, ScriptedServer

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

STREAM_SUFFIX = ":streamGenerateContent"
UNARY_SUFFIX = ":generateContent"


@dataclass(frozen=True)
class Stream:
    """A successful answer: one SSE event per chunk; the last carries finishReason and usage.

    With no chunks, a single event with no content and only the finish reason is sent (what
    Gemini does when it stops for SAFETY, RECITATION, ...). ``delay_s`` pauses between chunks.
    """

    chunks: list[str]
    prompt_tokens: int = 11
    output_tokens: int = 42
    delay_s: float = 0.0
    finish_reason: str = "STOP"


@dataclass(frozen=True)
class Fail:
    """An API error with Gemini's JSON error body."""

    status: int
    message: str = "The fake Gemini was told to fail this request."


@dataclass(frozen=True)
class Drop:
    """Send these chunks (no finish reason), then break the connection mid-body."""

    chunks: list[str]


@dataclass(frozen=True)
class Hang:
    """Accept the request, then send nothing for ``seconds`` (afterwards: a 504)."""

    seconds: float


@dataclass(frozen=True)
class Blocked:
    """The prompt itself was blocked: promptFeedback with a blockReason, no candidates."""

    reason: str = "SAFETY"


Behaviour = Stream | Fail | Drop | Hang | Blocked


@dataclass(frozen=True)
class GeminiRequest(RecordedRequest):
    @property
    def streaming(self) -> bool:
        return self.path.endswith(STREAM_SUFFIX)

    @property
    def system_text(self) -> str:
        instruction = self.body.get("systemInstruction") or {}
        return "".join(part.get("text", "") for part in instruction.get("parts", []))

    @property
    def user_text(self) -> str:
        return "".join(
            part.get("text", "")
            for content in self.body.get("contents", [])
            for part in content.get("parts", [])
        )


def error_body(status: int, message: str) -> bytes:
    name = STATUS_NAMES.get(status, "UNKNOWN")
    return json.dumps({"error": {"code": status, "message": message, "status": name}}).encode()


def _response(
    texts: list[str], *, finish_reason: str | None = None, usage: tuple[int, int] | None = None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"index": 0}
    if texts:
        candidate["content"] = {"role": "model", "parts": [{"text": text} for text in texts]}
    if finish_reason is not None:
        candidate["finishReason"] = finish_reason
    body: dict[str, Any] = {"candidates": [candidate], "modelVersion": "fake-gemini"}
    if usage is not None:
        prompt_tokens, output_tokens = usage
        body["usageMetadata"] = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": output_tokens,
            "totalTokenCount": prompt_tokens + output_tokens,
        }
    return body


def _sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"


@dataclass
class FakeGemini(ScriptedServer[Behaviour, GeminiRequest]):
    """The fake server. Use as an async context manager; ``base_url`` is set inside it."""

    def record(
        self, method: str, path: str, query: str, headers: dict[str, str], body: Any
    ) -> GeminiRequest:
        return GeminiRequest(method, path, query, headers, body)

    async def answer(self, exchange: Exchange, request: GeminiRequest, number: int) -> None:
        path = request.path
        if not (path.endswith(STREAM_SUFFIX) or path.endswith(UNARY_SUFFIX)):
            message = f"FakeGemini: no such endpoint {path} (request {number})"
            await exchange.whole(404, error_body(404, message))
            return
        behaviour = self.next_behaviour()
        if behaviour is None:
            message = f"FakeGemini: nothing scripted for request {number} ({path})"
            await exchange.whole(500, error_body(500, message))
            return
        streaming = path.endswith(STREAM_SUFFIX)
        if isinstance(behaviour, Fail):
            await exchange.whole(behaviour.status, error_body(behaviour.status, behaviour.message))
        elif isinstance(behaviour, Blocked):
            blocked = {
                "promptFeedback": {"blockReason": behaviour.reason},
                "usageMetadata": {"promptTokenCount": 3, "totalTokenCount": 3},
            }
            await self._send_events(exchange, [blocked], streaming=streaming)
        elif isinstance(behaviour, Hang):
            if await exchange.pause(behaviour.seconds):
                message = f"FakeGemini hung for {behaviour.seconds}s as scripted"
                await exchange.whole(504, error_body(504, message))
            elif not exchange.gone.is_set():
                await exchange.whole(503, error_body(503, "FakeGemini is shutting down"))
        elif isinstance(behaviour, Drop):
            await exchange.start(200, b"text/event-stream")
            for text in behaviour.chunks:
                await exchange.body(_sse(_response([text])), more=True)
            # Returning with the body unfinished makes uvicorn close the connection: the
            # client sees a chunked body cut short (uvicorn logs that at error level).
        else:
            await self._send_stream(exchange, behaviour, streaming=streaming)

    async def _send_stream(self, exchange: Exchange, stream: Stream, *, streaming: bool) -> None:
        usage = (stream.prompt_tokens, stream.output_tokens)
        if not streaming:
            final = _response(
                ["".join(stream.chunks)] if stream.chunks else [],
                finish_reason=stream.finish_reason,
                usage=usage,
            )
            if stream.delay_s and not await exchange.pause(stream.delay_s * len(stream.chunks)):
                return
            await exchange.whole(200, json.dumps(final).encode())
            return
        events: list[dict[str, Any]] = []
        for index, text in enumerate(stream.chunks):
            last = index == len(stream.chunks) - 1
            events.append(
                _response(
                    [text],
                    finish_reason=stream.finish_reason if last else None,
                    usage=usage if last else None,
                )
            )
        if not events:
            events.append(_response([], finish_reason=stream.finish_reason, usage=usage))
        await self._send_events(exchange, events, streaming=True, delay_s=stream.delay_s)

    async def _send_events(
        self,
        exchange: Exchange,
        events: list[dict[str, Any]],
        *,
        streaming: bool,
        delay_s: float = 0.0,
    ) -> None:
        if not streaming:
            await exchange.whole(200, json.dumps(events[-1]).encode())
            return
        await exchange.start(200, b"text/event-stream")
        for index, event in enumerate(events):
            if index and delay_s and not await exchange.pause(delay_s):
                break
            await exchange.body(_sse(event), more=True)
        await exchange.body(b"", more=False)
