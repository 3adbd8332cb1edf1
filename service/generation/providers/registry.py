"""Which providers this process can run, and building one for a generation."""

from __future__ import annotations

from service.errors import InvalidRequest
from service.generation.providers import Provider
from service.settings import Settings

KNOWN = frozenset({"offline", "gemini", "openai"})

# What a server needs to offer each provider, in the variables an operator sets.
_NEEDS = {
    "gemini": "GEMINI_API_KEY or GOOGLE_API_KEY",
    "openai": "GENSTREAM_OPENAI_BASE_URL or GENSTREAM_OPENAI_API_KEY",
}


def available_providers(settings: Settings) -> frozenset[str]:
    """Offline always; gemini with a key; openai with a base URL or a key (a local server
    such as Ollama needs no key). Those may then be asked for per generation."""
    available = {"offline"}
    if settings.gemini_api_key:
        available.add("gemini")
    if settings.openai_base_url or settings.openai_api_key:
        available.add("openai")
    return frozenset(available)


def requirement(name: str) -> str:
    """What this server lacks to run provider ``name``, in words for the one who asked."""
    needs = _NEEDS.get(name)
    return f"{name} needs {needs}" if needs else f"{name} is not a provider"


def build_provider(name: str, model: str | None, settings: Settings) -> Provider:
    available = available_providers(settings)
    if name == "offline":
        from service.generation.providers.offline import OfflineProvider

        return OfflineProvider(delay_s=settings.offline_delay_s)
    # Each SDK is imported only where its provider is used.
    if name == "gemini" and name in available and settings.gemini_api_key is not None:
        from service.generation.providers.gemini import GeminiProvider

        return GeminiProvider(
            api_key=settings.gemini_api_key.get_secret_value(),
            model=model or settings.gemini_model,
            base_url=settings.gemini_base_url,
            timeout_s=settings.gemini_timeout_s,
            attempts=settings.gemini_attempts,
            backoff_s=settings.gemini_backoff_s,
            backoff_max_s=settings.gemini_backoff_max_s,
        )
    if name == "openai" and name in available:
        from service.generation.providers.openai import OpenAIProvider

        key = settings.openai_api_key
        return OpenAIProvider(
            base_url=settings.openai_base_url,
            api_key=key.get_secret_value() if key is not None else None,
            model=model or settings.openai_model,
            timeout_s=settings.openai_timeout_s,
            attempts=settings.openai_attempts,
            backoff_s=settings.openai_backoff_s,
            backoff_max_s=settings.openai_backoff_max_s,
        )
    raise InvalidRequest(f"provider {name!r} is not available on this server")
