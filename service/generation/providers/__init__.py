"""LLM providers: each streams text for one phase's prompt, then says what it used.

``gemini`` (the only importer of google.genai) and ``offline`` (deterministic templates) both
answer in the file-block format of ``generation/parsing.py``, so one parser serves both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from service.spec import Spec


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one provider call, reported after its last chunk."""

    prompt_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Retrying:
    """A note between tries, before any text: try ``number`` of ``of`` failed for ``reason``;
    the next starts in ``wait_s``. The generator makes it an ``llm.retrying`` event, so a
    reader can tell a model that is slow to answer from a worker that is gone."""

    number: int
    of: int
    wait_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Prompt:
    """What one phase asks for. ``system``/``user`` are the words a model reads; ``spec``,
    ``stage`` and ``files`` are the same request in structured form (the offline provider
    uses those instead of reading prose)."""

    stage: str
    system: str
    user: str
    spec: Spec
    files: Mapping[str, str] = field(default_factory=dict)


class ProviderError(Exception):
    """The provider could not answer (after its own retries); the run fails with this text."""


class StreamBroken(ProviderError):
    """The answer had started when the stream failed: the phase must restart from scratch,
    because half an answer cannot be resumed."""


class Provider(Protocol):
    name: str
    model: str
    repairs: bool
    """Whether it can correct code when shown what failed: a model can, templates cannot (a
    failed verification then ends the run at once)."""

    def stream(self, prompt: Prompt) -> AsyncIterator[str | Usage | Retrying]:
        """Text chunks as they arrive, then exactly one ``Usage`` last; before any text, a
        ``Retrying`` for each try that failed and will be tried again.

        Raises ProviderError when no answer could be had (retries are the provider's job, and
        only before any text was yielded), StreamBroken when it broke after text was yielded.
        """
        ...
