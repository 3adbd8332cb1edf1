"""genstream's event vocabulary: the types, the statuses, and each type's ``data``.

GENERATED from the service's ``service/events.py`` by ``clients/python/generate.py``: do not
edit. After a change to the vocabulary, run ``python clients/python/generate.py``.

Readers must ignore keys of ``data`` they do not know, and events of types they do not know
(a newer server): a key may be added to a type's data; none is removed or changes meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any, NotRequired, TypedDict


class EventType(StrEnum):
    """The type of an event (its ``type``)."""

    QUEUED = "generation.queued"
    STARTED = "generation.started"
    PHASE_STARTED = "phase.started"
    LLM_DELTA = "llm.delta"
    FILE_SAVED = "file.saved"
    PHASE_COMPLETED = "phase.completed"
    RESUMED = "generation.resumed"
    SUCCEEDED = "generation.succeeded"
    FAILED = "generation.failed"
    CANCELLED = "generation.cancelled"


class Status(StrEnum):
    """A generation's status (an event's ``status``)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_TYPES: frozenset[EventType] = frozenset(
    {EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED}
)
"""The types that end a generation's log: exactly one of them comes last."""
TERMINAL_STATUSES: frozenset[Status] = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}
)


class NoData(TypedDict):
    """``generation.queued``, ``generation.succeeded``, ``generation.cancelled``."""


class StartedData(TypedDict):
    worker: str
    attempt: int
    provider: str
    model: str | None


class PhaseStartedData(TypedDict):
    phase: str
    number: int
    of: int
    attempt: int
    provider: str
    model: str | None
    reason: NotRequired[str]
    """On a restart of the phase: why (its stream broke, its answer did not parse)."""


class DeltaData(TypedDict):
    phase: str
    attempt: int
    text: str


class FileSavedData(TypedDict):
    path: str
    size: int
    sha256: str
    language: str


class PhaseCompletedData(TypedDict):
    phase: str
    files: int
    attempts: int
    prompt_tokens: int
    output_tokens: int
    duration_ms: int
    provider: str
    model: str | None


class ResumedData(TypedDict):
    worker: str
    attempt: int
    completed_phases: list[str]


class FailedData(TypedDict):
    error: NotRequired[str]


EVENT_DATA: Mapping[EventType, type[Mapping[str, Any]]] = {
    EventType.QUEUED: NoData,
    EventType.STARTED: StartedData,
    EventType.PHASE_STARTED: PhaseStartedData,
    EventType.LLM_DELTA: DeltaData,
    EventType.FILE_SAVED: FileSavedData,
    EventType.PHASE_COMPLETED: PhaseCompletedData,
    EventType.RESUMED: ResumedData,
    EventType.SUCCEEDED: NoData,
    EventType.FAILED: FailedData,
    EventType.CANCELLED: NoData,
}
"""What each type's ``data`` holds."""
