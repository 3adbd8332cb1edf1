"""Which providers this process can run, and building one for a generation."""

from __future__ import annotations

from service.errors import InvalidRequest
from service.generation.providers import Provider
from service.settings import Settings

KNOWN = frozenset({"offline", "gemini"})


def available_providers(settings: Settings) -> frozenset[str]:
    """Offline always; gemini only with a key (then it may be asked for per generation)."""
    return frozenset({"offline", "gemini"}) if settings.gemini_api_key else frozenset({"offline"})


def build_provider(name: str, model: str | None, settings: Settings) -> Provider:
    if name == "offline":
        from service.generation.providers.offline import OfflineProvider

        return OfflineProvider(delay_s=settings.offline_delay_s)
    if name == "gemini" and settings.gemini_api_key is not None:
        # Imported here so that google.genai is loaded only where Gemini is used.
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
    raise InvalidRequest(f"provider {name!r} is not available on this server")
