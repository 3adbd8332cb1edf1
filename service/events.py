"""The event vocabulary: types, the status each implies, and the event to append. No I/O.

The stored event (what clients see) is rendered by PostgreSQL itself from the row, so its shape
lives in one SQL expression in ``store/event_log.py``; this module holds what a writer says.

No ``from __future__ import annotations`` here: a TypedDict knows which keys are
``NotRequired`` only when its annotations are evaluated as the class is made.
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict  # pydantic reads it on 3.11 (api/schemas.py)


class EventType(StrEnum):
    QUEUED = "generation.queued"
    STARTED = "generation.started"
    PHASE_STARTED = "phase.started"
    LLM_DELTA = "llm.delta"
    LLM_RETRYING = "llm.retrying"
    LLM_WAITING = "llm.waiting"
    FILE_SAVED = "file.saved"
    PHASE_COMPLETED = "phase.completed"
    CHECK_COMPLETED = "check.completed"
    RESUMED = "generation.resumed"
    STALLED = "generation.stalled"
    RETRIED = "generation.retried"
    SUCCEEDED = "generation.succeeded"
    FAILED = "generation.failed"
    CANCELLED = "generation.cancelled"


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


# What each type's ``data`` holds. Writers build these (so mypy holds them to it), the OpenAPI
# document publishes them (``api/schemas.py``), the Python client's vocabulary is generated
# from them (``clients/python/generate.py``), and a test checks a real run's events against
# them. Readers must ignore keys they do not know:
# a key may be added to a type's data; none is removed or changes meaning.


class NoData(TypedDict):
    """``generation.queued``."""


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
    round: NotRequired[int]
    """``verify`` and ``repair`` only: which verification round (1: the first verify)."""


class RedactedMark(TypedDict):
    """What retention removed from an old run's event (``python -m service retention``)."""

    at: str
    """When (ISO 8601)."""
    reason: str
    """Why, in words."""
    chars: int
    """The characters removed (model text or check output)."""


class DeltaData(TypedDict):
    phase: str
    attempt: int
    text: str
    """Empty once redacted by retention (``redacted`` says so)."""
    redacted: NotRequired[RedactedMark]


class RetryingData(TypedDict):
    """The model's API failed a request before any text; it is asked again after ``wait_s``."""

    phase: str
    attempt: int
    """The phase's attempt, as in ``phase.started``."""
    request: int
    """The request that failed (1 is the first) ..."""
    of: int
    """... of this many the provider makes for one answer."""
    wait_s: float
    reason: str


class WaitingData(TypedDict):
    """The model has sent nothing for ``waited_s`` (every GENSTREAM_LLM_WAITING_S of silence):
    its worker is alive and waiting, not gone."""

    phase: str
    attempt: int
    waited_s: float


class FileSavedData(TypedDict):
    path: str
    size: int
    sha256: str
    language: str


CheckStep = Literal["compile", "import", "tests"]
VerifyLevel = Literal["off", "compile", "tests"]
"""How far a run's code is checked: ``compile`` (every Python file compiles) or ``tests`` (it
compiles, its app imports, its tests pass); ``off``: not at all."""


class CheckCounts(TypedDict):
    """Files (compile), modules (import) or tests (tests) by outcome."""

    passed: int
    failed: int
    errors: int
    skipped: int
    total: int


class CheckCompletedData(TypedDict):
    step: CheckStep
    ok: bool
    reason: str
    """One line in words, passed or not ("3 of 31 generated tests fail: test_total, ...")."""
    counts: CheckCounts
    failing: list[str]
    """The files (compile, import) or tests (tests) that failed."""
    duration_ms: int
    output: str
    """The tail of the step's output when it failed (at most 8,000 characters); else empty."""
    round: int
    stopped_by: NotRequired[str]
    """The sandbox limit that stopped the step: timeout, cpu, memory, processes, file_size,
    disk, output or signal."""
    redacted: NotRequired[RedactedMark]
    """``output`` emptied by retention."""


class Verification(TypedDict):
    """A verification round's outcome, and on the terminal event the run's."""

    level: VerifyLevel
    ok: bool
    summary: str
    """In words: what passed, or the first failure's reason."""
    rounds: int
    """Verify rounds run (1 + repairs when every repair was verified)."""
    repairs: int
    """Repair phases that completed."""
    checks: list[CheckCompletedData]
    """The last round's checks, in order, up to the first that failed."""


class PhaseCompletedData(TypedDict):
    phase: str
    files: int
    attempts: int
    prompt_tokens: int
    output_tokens: int
    duration_ms: int
    provider: str
    model: str | None
    round: NotRequired[int]
    """``verify`` and ``repair`` only, as in ``phase.started``."""
    verification: NotRequired[Verification]
    """``verify`` only: how the round went."""
    redacted: NotRequired[RedactedMark]
    """The checks' ``output`` emptied by retention."""


class ResumedData(TypedDict):
    worker: str
    attempt: int
    completed_phases: list[str]
    gap_s: NotRequired[float]
    """Seconds since the run's last event (a stalled one aside): how long it stood still."""


class StalledData(TypedDict):
    """The worker holding the run stopped renewing its lease: it died, hangs or lost the
    database. Another worker resumes the run (``generation.resumed``); the silent one is fenced
    off and can write nothing more to it."""

    worker: str
    """The worker that fell silent."""
    attempt: int
    """Its claim's attempt."""
    silent_s: float
    """Seconds since the run's last event."""


class RetriedData(TypedDict):
    """The run's owner asked for another attempt after it failed or was cancelled: a worker
    resumes it from the first phase that did not complete, with the files of those that did.
    The only event that may follow a terminal one."""

    after: Literal["failed", "cancelled"]
    """How the attempt before ended."""
    completed_phases: list[str]
    """The building phases kept (verification starts again, with its repairs)."""
    attempt: int
    """The run's attempt number now (the retry takes one, fencing off any worker still
    holding the one before): the next attempt's budget of claims counts from here."""


class ChainEnd(TypedDict):
    """What the log itself adds to a terminal event's data as it stores it (absent on events
    stored before migration 0009): proof of what came before."""

    count: NotRequired[int]
    """The number of events of the generation, this one included (its ``seq``)."""
    chain_hash: NotRequired[str]
    """The ``chain`` of the event before this one: a reader whose own chain matches it saw
    every event, unaltered (64 hex digits)."""


class SucceededData(ChainEnd):
    verification: NotRequired[Verification]
    """Always written since verification exists; absent on runs stored before it."""
    redacted: NotRequired[RedactedMark]
    """The checks' ``output`` emptied by retention."""


class CancelledData(ChainEnd):
    """``generation.cancelled``: only what the log adds."""


class FailedData(ChainEnd):
    error: NotRequired[str]
    verification: NotRequired[Verification]
    """When verification ran: its last round (why the code was not accepted, if that is why)."""
    redacted: NotRequired[RedactedMark]
    """The checks' ``output`` emptied by retention."""


EVENT_DATA: Mapping[EventType, type[Mapping[str, Any]]] = {
    EventType.QUEUED: NoData,
    EventType.STARTED: StartedData,
    EventType.PHASE_STARTED: PhaseStartedData,
    EventType.LLM_DELTA: DeltaData,
    EventType.LLM_RETRYING: RetryingData,
    EventType.LLM_WAITING: WaitingData,
    EventType.FILE_SAVED: FileSavedData,
    EventType.PHASE_COMPLETED: PhaseCompletedData,
    EventType.CHECK_COMPLETED: CheckCompletedData,
    EventType.RESUMED: ResumedData,
    EventType.STALLED: StalledData,
    EventType.RETRIED: RetriedData,
    EventType.SUCCEEDED: SucceededData,
    EventType.FAILED: FailedData,
    EventType.CANCELLED: CancelledData,
}
"""Every type's data; one entry per type (a test holds it to ``EventType``)."""

TERMINAL_TYPES = frozenset({EventType.SUCCEEDED, EventType.FAILED, EventType.CANCELLED})
TERMINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

_STATUS_AFTER: Mapping[EventType, Status] = {
    EventType.QUEUED: Status.QUEUED,
    EventType.RETRIED: Status.QUEUED,
    EventType.SUCCEEDED: Status.SUCCEEDED,
    EventType.FAILED: Status.FAILED,
    EventType.CANCELLED: Status.CANCELLED,
}


def status_after(event_type: EventType) -> Status:
    """The generation's status once an event of this type is in the log."""
    return _STATUS_AFTER.get(event_type, Status.RUNNING)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event as a writer states it; the log adds generation_id, seq, status and timestamp."""

    type: EventType
    stage: str
    progress: float
    message: str
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.progress <= 1.0:
            raise ValueError(f"progress must be within [0, 1], got {self.progress}")

    @property
    def status(self) -> Status:
        return status_after(self.type)

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_TYPES


@dataclass(frozen=True, slots=True)
class NewFile:
    """A generated file, stored in the same transaction as the ``file.saved`` event naming it."""

    path: str
    content: str
    language: str

    @property
    def size(self) -> int:
        return len(self.content.encode())

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()

    def saved(self, stage: str, progress: float) -> NewEvent:
        """The ``file.saved`` event announcing this file (content travels beside it)."""
        return NewEvent(
            EventType.FILE_SAVED,
            stage,
            progress,
            f"Saved {self.path}",
            FileSavedData(
                path=self.path, size=self.size, sha256=self.sha256, language=self.language
            ),
        )
