"""Which providers a server offers, and building one for a generation."""

from __future__ import annotations

import pytest

from service.errors import InvalidRequest
from service.generation.providers import Provider
from service.generation.providers.registry import available_providers, build_provider
from service.settings import Settings

KEY_VARIABLES = (
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GENSTREAM_GEMINI_MODEL",
    "GENSTREAM_OPENAI_BASE_URL",
    "GENSTREAM_OPENAI_API_KEY",
    "GENSTREAM_OPENAI_MODEL",
)


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the developer's shell holds, these tests decide which key exists."""
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


async def close(provider: Provider) -> None:
    aclose = getattr(provider, "aclose", None)
    if aclose is not None:
        await aclose()


def test_without_a_key_only_offline_is_available() -> None:
    assert available_providers(Settings()) == {"offline"}


@pytest.mark.parametrize("variable", ["GEMINI_API_KEY", "GOOGLE_API_KEY"])
def test_a_key_makes_gemini_available(variable: str) -> None:
    settings = Settings.model_validate({variable: "x"})

    assert available_providers(settings) == {"offline", "gemini"}


@pytest.mark.parametrize("variable", ["GEMINI_API_KEY", "GOOGLE_API_KEY"])
def test_a_key_in_the_environment_makes_gemini_available(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "x")

    assert available_providers(Settings()) == {"offline", "gemini"}


def test_the_key_keyword_works_on_the_constructor() -> None:
    settings = Settings(GEMINI_API_KEY="x")

    assert settings.gemini_api_key is not None
    assert settings.gemini_api_key.get_secret_value() == "x"
    assert available_providers(settings) == {"offline", "gemini"}


def test_gemini_without_a_key_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="'gemini' is not available"):
        build_provider("gemini", None, Settings())


def test_gemini_with_a_model_but_without_a_key_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="'gemini'"):
        build_provider("gemini", "gemini-x", Settings())


@pytest.mark.parametrize("name", ["anthropic", "", "Offline", "GEMINI", "OpenAI"])
def test_an_unknown_provider_is_an_invalid_request(name: str) -> None:
    settings = Settings(GEMINI_API_KEY="x", openai_base_url="http://127.0.0.1:11434/v1")
    with pytest.raises(InvalidRequest, match="is not available"):
        build_provider(name, None, settings)


async def test_offline_is_built_without_a_key() -> None:
    provider = build_provider("offline", None, Settings())
    try:
        assert provider.name == "offline"
        assert isinstance(provider.model, str)
    finally:
        await close(provider)


async def test_gemini_with_a_key_uses_the_default_model() -> None:
    settings = Settings(GEMINI_API_KEY="x")

    provider = build_provider("gemini", None, settings)
    try:
        assert provider.name == "gemini"
        assert provider.model == settings.gemini_model
    finally:
        await close(provider)


async def test_gemini_default_model_follows_the_settings() -> None:
    settings = Settings.model_validate({"GEMINI_API_KEY": "x", "gemini_model": "gemini-custom"})

    provider = build_provider("gemini", None, settings)
    try:
        assert provider.model == "gemini-custom"
    finally:
        await close(provider)


async def test_gemini_with_a_key_uses_the_model_asked_for() -> None:
    provider = build_provider("gemini", "gemini-x", Settings(GEMINI_API_KEY="x"))
    try:
        assert provider.name == "gemini"
        assert provider.model == "gemini-x"
    finally:
        await close(provider)


@pytest.mark.parametrize(
    ("variable", "value"),
    [("GENSTREAM_OPENAI_BASE_URL", "http://127.0.0.1:11434/v1"), ("GENSTREAM_OPENAI_API_KEY", "x")],
)
def test_a_base_url_or_a_key_makes_openai_available(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    assert available_providers(Settings()) == {"offline", "openai"}


def test_both_keys_make_every_provider_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "x")
    monkeypatch.setenv("GENSTREAM_OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")

    assert available_providers(Settings()) == {"offline", "gemini", "openai"}


@pytest.mark.parametrize("blank", [{"openai_base_url": ""}, {"openai_api_key": ""}])
def test_a_blank_base_url_or_key_leaves_openai_unavailable(blank: dict[str, str]) -> None:
    settings = Settings.model_validate(blank)

    assert available_providers(settings) == {"offline"}
    with pytest.raises(InvalidRequest, match="'openai' is not available"):
        build_provider("openai", None, settings)


@pytest.mark.parametrize("url", ["127.0.0.1:11434/v1", "ftp://example.com/v1", "localhost"])
def test_a_base_url_that_is_not_http_is_refused_by_name(url: str) -> None:
    with pytest.raises(ValueError, match="openai_base_url"):
        Settings(openai_base_url=url)


def test_openai_without_a_base_url_or_a_key_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest, match="'openai' is not available"):
        build_provider("openai", "gpt-x", Settings(GEMINI_API_KEY="x"))


async def test_openai_with_a_base_url_uses_the_default_model() -> None:
    settings = Settings(openai_base_url="http://127.0.0.1:11434/v1")

    provider = build_provider("openai", None, settings)
    try:
        assert provider.name == "openai"
        assert provider.model == settings.openai_model
    finally:
        await close(provider)


async def test_openai_uses_the_model_asked_for_or_the_configured_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENSTREAM_OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("GENSTREAM_OPENAI_MODEL", "qwen2.5-coder:7b")
    settings = Settings()

    default = build_provider("openai", None, settings)
    asked = build_provider("openai", "llama3.3", settings)
    try:
        assert default.model == "qwen2.5-coder:7b"
        assert asked.model == "llama3.3"
    finally:
        await close(default)
        await close(asked)
