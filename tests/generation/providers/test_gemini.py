"""GeminiProvider with the real google-genai SDK against a fake Gemini over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from service.generation.providers import ProviderError, StreamBroken, Usage
from service.generation.providers.gemini import GeminiProvider
from service.observe import metrics
from tests.generation.fake_gemini import Blocked, Drop, Fail, FakeGemini, Hang, Stream
from tests.generation.providers.exchange import ANSWER, SYSTEM, USER, collect, prompt

MODEL = "gemini-test-model"
API_KEY = "test-gemini-key"

ProviderFactory = Callable[..., AbstractAsyncContextManager[GeminiProvider]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini() as fake:
        yield fake


@pytest.fixture
def provider_for(fake: FakeGemini) -> ProviderFactory:
    """``async with provider_for(attempts=2) as provider:``; tiny backoffs unless overridden."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[GeminiProvider]:
        options: dict[str, Any] = {
            "api_key": API_KEY,
            "model": MODEL,
            "base_url": fake.base_url,
            "timeout_s": 5.0,
            "attempts": 4,
            "backoff_s": 0.01,
            "backoff_max_s": 0.02,
        }
        options.update(overrides)
        yield GeminiProvider(**options)

    return factory


async def test_streams_the_answer_chunk_by_chunk_then_exactly_one_usage(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Stream(ANSWER, prompt_tokens=57, output_tokens=31))
    async with provider_for() as provider:
        assert provider.name == "gemini"
        assert provider.model == MODEL
        items = await collect(provider)
    assert items == [*ANSWER, Usage(prompt_tokens=57, output_tokens=31)]
    assert len(fake.requests) == 1


async def test_request_carries_model_system_instruction_prompt_and_api_key(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Stream(["ok"]))
    async with provider_for() as provider:
        await collect(provider)
    [request] = fake.requests
    assert request.method == "POST"
    assert request.path.endswith(f"/models/{MODEL}:streamGenerateContent")
    assert "alt=sse" in request.query
    assert request.headers["x-goog-api-key"] == API_KEY
    # The per-chunk timeout (5 s here) is not announced as the deadline of the whole answer.
    assert int(request.headers["x-server-timeout"]) > 5
    assert request.system_text == SYSTEM
    assert request.user_text == USER
    assert request.body["contents"][0]["role"] == "user"
    assert request.body["generationConfig"]["temperature"] <= 0.5


async def test_429_then_success_is_retried_and_the_answer_is_complete(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Fail(429, "Resource has been exhausted (e.g. check quota)."), Stream(ANSWER))
    async with provider_for() as provider:
        items = await collect(provider)
    assert items[:-1] == ANSWER
    assert isinstance(items[-1], Usage)
    assert len(fake.requests) == 2
    assert fake.pending == 0


async def test_500_before_any_output_is_retried(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Fail(500, "Internal error encountered."), Stream(["all ", "good"]))
    async with provider_for() as provider:
        items = await collect(provider)
    assert items[:2] == ["all ", "good"]
    assert len(fake.requests) == 2


async def test_503_on_every_attempt_fails_after_exactly_the_allowed_attempts(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(*[Fail(503, "The model is overloaded. Please try again later.")] * 5)
    retries = metrics.MODEL_RETRIES.value("gemini", MODEL, "api")
    failures = metrics.MODEL_FAILURES.value("gemini", MODEL, "api")
    async with provider_for(attempts=3) as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    # Three failed requests, two of them tried again.
    assert metrics.MODEL_RETRIES.value("gemini", MODEL, "api") - retries == 2
    assert metrics.MODEL_FAILURES.value("gemini", MODEL, "api") - failures == 3
    assert not isinstance(caught.value, StreamBroken)
    message = str(caught.value)
    assert "503" in message
    assert "UNAVAILABLE" in message
    assert "3 attempts" in message
    assert len(fake.requests) == 3
    assert fake.pending == 2


async def test_400_fails_at_once_with_geminis_message(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Fail(400, "API key not valid. Please pass a valid API key."), Stream(["unused"]))
    async with provider_for() as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    assert not isinstance(caught.value, StreamBroken)
    assert "API key not valid" in str(caught.value)
    assert "400" in str(caught.value)
    assert len(fake.requests) == 1


async def test_dropped_connection_after_two_chunks_yields_them_then_breaks(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Drop(ANSWER[:2]), Stream(["must not be fetched"]))
    items: list[str | Usage] = []
    async with provider_for() as provider:
        with pytest.raises(StreamBroken) as caught:
            await collect(provider, into=items)
    assert items == ANSWER[:2]
    assert "broke" in str(caught.value)
    assert len(fake.requests) == 1


async def test_drop_before_any_text_is_retried_like_a_connection_error(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Drop([]), Stream(["recovered"]))
    async with provider_for() as provider:
        items = await collect(provider)
    assert items[0] == "recovered"
    assert len(fake.requests) == 2


async def test_no_first_chunk_within_timeout_fails_after_all_attempts(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Hang(30), Hang(30))
    async with provider_for(timeout_s=0.3, attempts=2, backoff_s=0) as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    assert not isinstance(caught.value, StreamBroken)
    assert "did not answer within 0.3s" in str(caught.value)
    assert len(fake.requests) == 2


async def test_stall_between_chunks_after_text_breaks_the_stream(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Stream(["first chunk", "late chunk"], delay_s=30))
    items: list[str | Usage] = []
    async with provider_for(timeout_s=0.3, attempts=3, backoff_s=0) as provider:
        with pytest.raises(StreamBroken) as caught:
            await collect(provider, into=items)
    assert items == ["first chunk"]
    assert "did not answer within 0.3s" in str(caught.value)
    assert len(fake.requests) == 1


async def test_safety_stop_without_text_ends_normally(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Stream([], prompt_tokens=9, output_tokens=0, finish_reason="SAFETY"))
    async with provider_for() as provider:
        items = await collect(provider)
    assert items == [Usage(prompt_tokens=9, output_tokens=0)]


async def test_blocked_prompt_fails_at_once_with_the_reason(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Blocked("PROHIBITED_CONTENT"), Stream(["unused"]))
    blocked = metrics.MODEL_FAILURES.value("gemini", MODEL, "blocked")
    async with provider_for() as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    assert metrics.MODEL_FAILURES.value("gemini", MODEL, "blocked") - blocked == 1
    assert "PROHIBITED_CONTENT" in str(caught.value)
    assert len(fake.requests) == 1


async def test_unreachable_server_is_retried_then_fails_as_a_connection_error(
    provider_for: ProviderFactory, fake: FakeGemini
) -> None:
    async with FakeGemini() as gone:
        dead_url = gone.base_url
    retries = metrics.MODEL_RETRIES.value("gemini", MODEL, "connection")
    async with provider_for(base_url=dead_url, attempts=2) as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    assert metrics.MODEL_RETRIES.value("gemini", MODEL, "connection") - retries == 1
    assert "2 attempts" in str(caught.value)
    assert "connection" in str(caught.value)


async def test_consumer_closing_the_stream_early_hangs_up_on_gemini_at_once(
    fake: FakeGemini, provider_for: ProviderFactory
) -> None:
    fake.script(Stream(["one", "two", "three"], delay_s=30))
    async with provider_for() as provider:
        stream = provider.stream(prompt())
        async with asyncio.timeout(5):
            assert await anext(stream) == "one"
            await stream.aclose()  # type: ignore[attr-defined]
            while fake.abandoned != [1]:
                await asyncio.sleep(0.01)
        fake.script(Stream(["again"]))
        assert (await collect(provider))[0] == "again"


async def test_fake_answers_500_when_nothing_is_scripted(fake: FakeGemini) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        response = await client.post(f"/v1/models/{MODEL}:generateContent", json={})
    assert response.status_code == 500
    assert "nothing scripted" in response.json()["error"]["message"]


async def test_fake_answers_generate_content_with_the_whole_text_in_one_json(
    fake: FakeGemini,
) -> None:
    fake.script(Stream(["Hello, ", "world"], prompt_tokens=3, output_tokens=4))
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        response = await client.post(f"/v1/models/{MODEL}:generateContent", json={})
    assert response.status_code == 200
    body = response.json()
    assert body["candidates"][0]["content"]["parts"] == [{"text": "Hello, world"}]
    assert body["candidates"][0]["finishReason"] == "STOP"
    assert body["usageMetadata"]["candidatesTokenCount"] == 4


async def test_fake_shuts_down_promptly_while_a_hang_is_in_progress() -> None:
    async with FakeGemini() as fake:
        fake.script(Hang(60))
        client = httpx.AsyncClient(base_url=fake.base_url, timeout=30)
        request = asyncio.create_task(
            client.post(f"/v1/models/{MODEL}:generateContent", json={"contents": []})
        )
        async with asyncio.timeout(5):
            while not fake.requests:
                await asyncio.sleep(0.01)
        exiting = asyncio.get_running_loop().time()
    elapsed = asyncio.get_running_loop().time() - exiting
    try:
        response = await asyncio.wait_for(request, 5)
        assert response.status_code == 503
    finally:
        await client.aclose()
    assert elapsed < 5
