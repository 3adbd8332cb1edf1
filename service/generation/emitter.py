"""The one seam between a generator and the log."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeAlias

from service.events import NewEvent, NewFile
from service.store.generations import Claimed

# A claimed generation, as the worker hands it to a generator.
Job: TypeAlias = Claimed


class RunCancelled(Exception):
    """Raised out of ``emit`` when the run was asked to stop: the generator just lets it fly."""


class Emitter(Protocol):
    async def emit(self, *events: NewEvent, files: Sequence[NewFile] = ()) -> None:
        """Make the events durable (all or none, files with them) before returning."""
        ...


Generate: TypeAlias = Callable[[Job, Emitter], Awaitable[None]]
