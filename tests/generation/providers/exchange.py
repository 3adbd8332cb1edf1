"""What the tests of the model providers share: one prompt, the answer a fake model streams
for it, and reading a provider's stream to the end (each provider's tests pair these with
their own fake server)."""

from __future__ import annotations

import asyncio

from service.generation.providers import Prompt, Provider, Retrying, Usage
from service.spec import Spec
from tests.helpers import SPEC

SYSTEM = "You write Python files. Answer only with file blocks."
USER = "Write app/models/user.py for the entity User(email: str, age: int)."

ANSWER = [
    "=== file: app/models/user.py ===\n",
    "from dataclasses import dataclass\n\n\n",
    "@dataclass\nclass User:\n",
    "    email: str\n",
    "    age: int\n",
    "=== end ===\n",
]


def prompt() -> Prompt:
    return Prompt(stage="models", system=SYSTEM, user=USER, spec=Spec.model_validate(SPEC))


async def collect(
    provider: Provider,
    into: list[str | Usage] | None = None,
    retries: list[Retrying] | None = None,
) -> list[str | Usage]:
    """The answer the stream yields; with ``into``, items land there as they arrive (so a test
    sees what was yielded before an exception); the notes between tries go to ``retries``."""
    items: list[str | Usage] = [] if into is None else into
    async with asyncio.timeout(10):
        async for item in provider.stream(prompt()):
            if isinstance(item, Retrying):
                if retries is not None:
                    retries.append(item)
                continue
            items.append(item)
    return items
