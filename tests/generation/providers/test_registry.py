"""Which providers a server offers, and building one for a generation."""

from __future__ import annotations

import pytest

from service.errors import InvalidRequest
from service.generation.providers import Provider
from service.generation.providers.registry import available_providers, build_provider
from service.settings import Settings

KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GENSTREAM_GEMINI_MODEL")


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


@pytest.mark.parametrize("name", ["openai", "", "Offline", "GEMINI"])
def test_an_unknown_provider_is_an_invalid_request(name: str) -> None:
    with pytest.raises(InvalidRequest, match="is not available"):
        build_provider(name, None, Settings(GEMINI_API_KEY="x"))


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
