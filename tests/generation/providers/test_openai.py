"""OpenAIProvider with the real openai SDK against a fake OpenAI-compatible API over real HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest

from service.generation.providers import ProviderError, StreamBroken, Usage
from service.generation.providers.openai import PLACEHOLDER_KEY, OpenAIProvider
from service.observe import metrics
from tests.generation.fake_openai import (
    Drop,
    ErrorEvent,
    Fail,
    FakeOpenAI,
    Hang,
    Refusal,
    Stream,
)
from tests.generation.providers.exchange import ANSWER, SYSTEM, USER, collect, prompt

MODEL = "openai-test-model"
API_KEY = "sk-test-0penai-k3y-never-logged"

ProviderFactory = Callable[..., AbstractAsyncContextManager[OpenAIProvider]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def provider_for(fake: FakeOpenAI) -> ProviderFactory:
    """``async with provider_for(attempts=2) as provider:``; tiny backoffs unless overridden."""

    @asynccontextmanager
    async def factory(**overrides: Any) -> AsyncIterator[OpenAIProvider]:
        options: dict[str, Any] = {
            "api_key": API_KEY,
            "model": MODEL,
            "base_url": fake.api_url,
            "timeout_s": 5.0,
            "attempts": 4,
            "backoff_s": 0.01,
            "backoff_max_s": 0.02,
        }
        options.update(overrides)
        yield OpenAIProvider(**options)

    return factory


async def test_streams_the_answer_chunk_by_chunk_then_exactly_one_usage(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(Stream(ANSWER, prompt_tokens=57, output_tokens=31))
    async with provider_for() as provider:
        assert provider.name == "openai"
        assert provider.model == MODEL
        items = await collect(provider)
    assert items == [*ANSWER, Usage(prompt_tokens=57, output_tokens=31)]
    assert len(fake.requests) == 1


async def test_request_carries_model_messages_key_and_asks_for_usage(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(Stream(["ok"]))
    async with provider_for() as provider:
        await collect(provider)
    [request] = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.body["model"] == MODEL
    assert request.messages == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": USER},
    ]
    assert request.body["stream"] is True
    assert request.wants_usage
    assert request.body["temperature"] <= 0.5


async def test_without_a_key_a_placeholder_is_sent(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(Stream(["ok"]))
    async with provider_for(api_key=None) as provider:
        assert (await collect(provider))[0] == "ok"
    assert fake.requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"


async def test_the_sdks_own_environment_variables_are_not_read(
    fake: FakeOpenAI, provider_for: ProviderFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only settings.py reads the environment: the configured URL and key (or none) win."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    fake.script(Stream(["ok"]))
    async with provider_for(api_key=None) as provider:
        assert (await collect(provider))[0] == "ok"
    assert fake.requests[0].headers["authorization"] == f"Bearer {PLACEHOLDER_KEY}"


async def test_a_server_that_sends_no_usage_counts_zero_tokens(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(Stream(["all ", "good"], usage=False))
    async with provider_for() as provider:
        items = await collect(provider)
    assert items == ["all ", "good", Usage(prompt_tokens=0, output_tokens=0)]


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (429, "Rate limit reached for requests. Please try again in 20ms."),
        (503, "The server is overloaded or not ready yet."),
    ],
)
async def test_429_or_503_then_success_is_retried_and_the_answer_is_complete(
    fake: FakeOpenAI, provider_for: ProviderFactory, status: int, message: str
) -> None:
    fake.script(Fail(status, message), Stream(ANSWER))
    retries = metrics.MODEL_RETRIES.value("openai", MODEL, "api")
    async with provider_for() as provider:
        items = await collect(provider)
    assert items[:-1] == ANSWER
    assert isinstance(items[-1], Usage)
    assert metrics.MODEL_RETRIES.value("openai", MODEL, "api") - retries == 1
    assert len(fake.requests) == 2
    assert fake.pending == 0


async def test_503_on_every_attempt_fails_after_exactly_the_allowed_attempts(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(*[Fail(503, "The server is overloaded or not ready yet.")] * 5)
    retries = metrics.MODEL_RETRIES.value("openai", MODEL, "api")
    failures = metrics.MODEL_FAILURES.value("openai", MODEL, "api")
    async with provider_for(attempts=3) as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    # Three failed requests, two of them tried again.
    assert metrics.MODEL_RETRIES.value("openai", MODEL, "api") - retries == 2
    assert metrics.MODEL_FAILURES.value("openai", MODEL, "api") - failures == 3
    assert not isinstance(caught.value, StreamBroken)
    assert str(caught.value) == (
        "OpenAI-compatible API kept failing: 503 server_error: "
        "The server is overloaded or not ready yet. (3 attempts)"
    )
    assert len(fake.requests) == 3
    assert fake.pending == 2


async def test_401_fails_at_once_with_the_servers_message(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(
        Fail(401, "Incorrect API key provided: sk-wrong. You can find your API key at "
             "https://platform.openai.com/account/api-keys.", code="invalid_api_key"),
        Stream(["unused"]),
    )  # fmt: skip
    async with provider_for() as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    assert not isinstance(caught.value, StreamBroken)
    message = str(caught.value)
    assert message.startswith(
        "OpenAI-compatible API rejected the request: 401 invalid_api_key: "
        "Incorrect API key provided: sk-wrong."
    )
    assert len(fake.requests) == 1


async def test_404_for_an_unknown_model_fails_at_once_naming_it(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(Fail(404, 'model "qwen-nope" not found, try pulling it first'))
    async with provider_for() as provider:
        with pytest.raises(ProviderError, match=r'404 .*model "qwen-nope" not found'):
            await collect(provider)
    assert len(fake.requests) == 1


async def test_dropped_connection_after_two_chunks_yields_them_then_breaks(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(Drop(ANSWER[:2]), Stream(["must not be fetched"]))
    items: list[str | Usage] = []
    async with provider_for() as provider:
        with pytest.raises(StreamBroken) as caught:
            await collect(provider, into=items)
    assert items == ANSWER[:2]
    assert str(caught.value).startswith(
        "OpenAI-compatible API's stream broke after the answer had started: connection failed"
    )
    assert len(fake.requests) == 1


async def test_drop_before_any_text_is_retried_like_a_connection_error(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(Drop([]), Stream(["recovered"]))
    retries = metrics.MODEL_RETRIES.value("openai", MODEL, "connection")
    async with provider_for() as provider:
        items = await collect(provider)
    assert items[0] == "recovered"
    assert metrics.MODEL_RETRIES.value("openai", MODEL, "connection") - retries == 1
    assert len(fake.requests) == 2


async def test_an_error_event_before_any_text_is_retried_by_its_code(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(ErrorEvent([], code=502), Stream(["recovered"]))
    async with provider_for() as provider:
        items = await collect(provider)
    assert items[0] == "recovered"
    assert len(fake.requests) == 2


async def test_an_error_event_after_text_breaks_the_stream_with_its_message(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(ErrorEvent(["half "], code=502, message="Upstream provider crashed"))
    items: list[str | Usage] = []
    async with provider_for() as provider:
        with pytest.raises(StreamBroken) as caught:
            await collect(provider, into=items)
    assert items == ["half "]
    assert str(caught.value) == (
        "OpenAI-compatible API's stream broke after the answer had started: "
        "502: Upstream provider crashed"
    )


async def test_no_first_chunk_within_timeout_fails_after_all_attempts(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(Hang(30), Hang(30))
    retries = metrics.MODEL_RETRIES.value("openai", MODEL, "timeout")
    async with provider_for(timeout_s=0.3, attempts=2, backoff_s=0) as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    assert not isinstance(caught.value, StreamBroken)
    assert str(caught.value) == "OpenAI-compatible API did not answer within 0.3s (2 attempts)"
    assert metrics.MODEL_RETRIES.value("openai", MODEL, "timeout") - retries == 1
    assert len(fake.requests) == 2


async def test_stall_between_chunks_after_text_breaks_the_stream(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(Stream(["first chunk", "late chunk"], delay_s=30))
    items: list[str | Usage] = []
    async with provider_for(timeout_s=0.3, attempts=3, backoff_s=0) as provider:
        with pytest.raises(StreamBroken) as caught:
            await collect(provider, into=items)
    assert items == ["first chunk"]
    assert "did not answer within 0.3s" in str(caught.value)
    assert len(fake.requests) == 1


async def test_a_refusal_fails_at_once_with_the_models_words(
    fake: FakeOpenAI, provider_for: ProviderFactory
) -> None:
    fake.script(Refusal("I can't write that."), Stream(["unused"]))
    blocked = metrics.MODEL_FAILURES.value("openai", MODEL, "blocked")
    async with provider_for() as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    assert str(caught.value) == "The model refused: I can't write that."
    assert metrics.MODEL_FAILURES.value("openai", MODEL, "blocked") - blocked == 1
    assert len(fake.requests) == 1


async def test_unreachable_server_is_retried_then_fails_as_a_connection_error(
    provider_for: ProviderFactory,
) -> None:
    async with FakeOpenAI() as gone:
        dead_url = gone.api_url
    retries = metrics.MODEL_RETRIES.value("openai", MODEL, "connection")
    async with provider_for(base_url=dead_url, attempts=2) as provider:
        with pytest.raises(ProviderError) as caught:
            await collect(provider)
    assert metrics.MODEL_RETRIES.value("openai", MODEL, "connection") - retries == 1
    assert "2 attempts" in str(caught.value)
    assert "connection failed" in str(caught.value)


async def test_consumer_closing_the_stream_early_hangs_up_at_once(
    fake: FakeOpenAI, provider_for: ProviderFactory
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


@pytest.fixture
def unredacted_logs() -> Iterator[None]:
    """Log records as made by the standard library, without genstream's redaction, so that a
    test sees what the code itself put in them."""
    factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)


@pytest.mark.usefixtures("unredacted_logs")
async def test_the_api_key_never_reaches_a_log_line_or_an_error(
    fake: FakeOpenAI, provider_for: ProviderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Servers quote a rejected key back; the key is hidden before the text goes anywhere."""
    fake.script(
        Fail(429, f"Rate limit reached for key {API_KEY}."),
        Drop([]),
        Fail(401, f"Incorrect API key provided: {API_KEY}.", code="invalid_api_key"),
    )
    with caplog.at_level(logging.DEBUG):
        async with provider_for() as provider:
            with pytest.raises(ProviderError) as caught:
                await collect(provider)
    assert "Incorrect API key provided: ***." in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert len(fake.requests) == 3
    lines = [record.msg for record in caplog.records if isinstance(record.msg, dict)]
    retries = [line for line in lines if line["event"] == "model.retry"]
    assert [line["kind"] for line in retries] == ["api", "connection"]
    assert "Rate limit reached for key ***." in retries[0]["reason"]
    logged = "\n".join(
        f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records
    )
    assert API_KEY not in logged


async def test_fake_answers_500_when_nothing_is_scripted(fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=fake.api_url) as client:
        response = await client.post("/chat/completions", json={"model": MODEL, "stream": True})
    assert response.status_code == 500
    assert "nothing scripted" in response.json()["error"]["message"]


async def test_fake_answers_a_whole_completion_when_not_streaming(fake: FakeOpenAI) -> None:
    fake.script(Stream(["Hello, ", "world"], prompt_tokens=3, output_tokens=4))
    async with httpx.AsyncClient(base_url=fake.api_url) as client:
        response = await client.post("/chat/completions", json={"model": MODEL, "messages": []})
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello, world"}
    assert body["usage"]["completion_tokens"] == 4


async def test_fake_shuts_down_promptly_while_a_hang_is_in_progress() -> None:
    async with FakeOpenAI() as fake:
        fake.script(Hang(60))
        client = httpx.AsyncClient(base_url=fake.api_url, timeout=30)
        request = asyncio.create_task(
            client.post("/chat/completions", json={"model": MODEL, "stream": True})
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
