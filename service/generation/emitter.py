"""The one seam between a generator and the log, and what a generator is handed to run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias
from uuid import UUID

from service.events import NewEvent, NewFile, Verification, VerifyLevel


class RunCancelled(Exception):
    """Raised out of ``emit`` when the run was asked to stop: the generator just lets it fly."""


class Emitter(Protocol):
    async def emit(self, *events: NewEvent, files: Sequence[NewFile] = ()) -> None:
        """Make the events durable (all or none, files with them) before returning."""
        ...


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed run. On a resumed run, ``completed_stages`` and ``files`` were rebuilt from the
    log (files are only ever stored with their phase's ``phase.completed``, so they are exactly
    the completed phases' output, the newest version of each path) and ``progress`` is where
    the bar stood. ``verification`` is the outcome of the last completed verify round."""

    id: UUID
    spec: Mapping[str, Any]
    provider: str
    model: str | None
    attempt: int
    completed_stages: tuple[str, ...] = ()
    files: Mapping[str, str] = field(default_factory=dict)
    progress: float = 0.0
    verify: VerifyLevel = "off"
    verification: Verification | None = None


Generate: TypeAlias = Callable[[Job, Emitter], Awaitable[Verification | None]]
"""Runs a job to its end; returns what the terminal event says of its verification."""
