"""A run's state reduced from its events: what a reader would know after reading events 1..N.

A stream opened with ``?snapshot=1`` starts with this instead of the events it stands for
(docs/CONTRACT.md, "Snapshot + tail"): a tab opened on a 100,000-event run draws the run from
one frame, then follows the events after it. No I/O here: ``streams/snapshots.py`` reads what
it needs and feeds it in.

The reduction is written so that it can be fed either every event or only the milestones
(every event but ``llm.delta``) and the number of deltas between them: seqs grow by exactly
one, so the gap between two milestones' seqs is the number of deltas between them, and a
snapshot never reads the model's text except its tail. A test feeds both ways and compares.

A page draws a timeline from it as it would from every event, and reduces the events after it
the same way, so what goes into it is exact:

* ``phases``: one per phase key (``_round_key``): the phase's name (``data.phase``, else the
  event's ``stage``), and for a verify or repair round (``data.round`` present) the round and
  the number of ``generation.retried`` events before it. A ``phase.started`` with a known key
  starts that phase again (``starts`` + 1, ``started_at`` moves to it); ``first_started_at``
  stays the timestamp of the ``phase.started`` that made it.
* ``marks``: the events a timeline marks, in seq order: every ``llm.retrying``,
  ``llm.waiting``, ``generation.stalled``, ``generation.resumed`` and ``generation.retried``
  (in a phase or not), and every ``phase.started`` whose key is already known: the phase
  restarted or resumed, or, after a retry, a building phase the attempt before had started (a
  verify or repair round after a retry has a new key: not a mark). Each is ``{seq, type,
  timestamp, stage, data}``, the event's own, ``data`` verbatim. Only the last ``MARKS_MAX``
  are kept; ``marks_dropped`` counts the earlier ones. None is an ``llm.delta``, so both
  ways of feeding see them all.

No ``from __future__ import annotations``: see ``events.py``.
"""

from collections import deque
from collections.abc import Mapping
from typing import Any, Final, Literal, NotRequired

from typing_extensions import TypedDict

from service.events import (
    TERMINAL_TYPES,
    CheckCompletedData,
    EventType,
    Verification,
)

MODEL_TEXT_CHARS = 4000
"""How much of the model's text a snapshot carries: the end of it, what a page shows first."""

MARKS_MAX = 500
"""How many marks a snapshot carries: the last ones; ``marks_dropped`` counts the others."""

MARKED_TYPES: Final = frozenset(
    {
        EventType.LLM_RETRYING,
        EventType.LLM_WAITING,
        EventType.STALLED,
        EventType.RESUMED,
        EventType.RETRIED,
    }
)
"""The types every event of which is a mark; a ``phase.started`` is one only on a restart."""


class PhaseState(TypedDict):
    """One phase of the run; a verify or repair round is a phase of its own."""

    phase: str
    round: NotRequired[int]
    """``verify`` and ``repair`` only."""
    number: int
    of: int
    status: Literal["running", "completed", "stopped"]
    """``stopped``: the run ended (failed or cancelled) while it ran."""
    starts: int
    """How many times it started: more than 1 after a restart or a resume."""
    attempt: int
    """Its latest start's ``attempt`` (``phase.started``: the phase's own count of tries)."""
    provider: str
    model: str | None
    retried: int
    """``generation.retried`` events before its first start: for a verify or repair round, the
    third part of its key (a reader going on from the snapshot finds the round by it)."""
    first_started_at: str
    """Its first start: the ``phase.started`` that made it (restarts leave it)."""
    started_at: str
    """Its latest start."""
    completed_at: str | None
    duration_ms: int | None
    """From ``phase.completed``: its latest start to its end."""
    requests: int | None
    """Model requests it took (``phase.completed``'s ``attempts``)."""
    prompt_tokens: int
    output_tokens: int
    files: int
    deltas: int
    """``llm.delta`` events in it."""
    retries: int
    """``llm.retrying`` events in it."""
    waits: int
    """``llm.waiting`` events in it."""
    checks: list[CheckCompletedData]
    """``verify`` only: its ``check.completed`` data, in order."""
    verification: NotRequired[Verification]
    """``verify`` only, once completed."""


class FileState(TypedDict):
    """The newest version of one file."""

    path: str
    size: int
    sha256: str
    language: str
    seq: int
    """The ``file.saved`` that stored this version."""
    versions: int
    """How many times it was saved (a repair saves a file again)."""


class Mark(TypedDict):
    """An event a timeline marks where it happened: a ``llm.retrying``, ``llm.waiting``,
    ``generation.stalled``, ``generation.resumed`` or ``generation.retried``, or a
    ``phase.started`` that starts a phase already started (``PhaseState.starts`` above 1).
    Its fields are the event's own, unchanged."""

    seq: int
    type: str
    timestamp: str
    stage: str
    data: dict[str, Any]
    """The event's ``data``, verbatim."""


class TokenTotals(TypedDict):
    prompt_tokens: int
    output_tokens: int


class SnapshotData(TypedDict):
    """The ``data`` of a ``snapshot`` frame: the run as events 1..``seq`` left it."""

    generation_id: str
    seq: int
    """The last event it stands for; the events after it follow."""
    chain: str
    """Event ``seq``'s ``chain``: a reader keeps the chain from it (docs/CONTRACT.md)."""
    status: str
    stage: str
    progress: float
    message: str
    timestamp: str
    """Event ``seq``'s."""
    created_at: str
    """Event 1's timestamp."""
    attempt: int
    """The worker attempt running it (0: never claimed)."""
    provider: str | None
    model: str | None
    phases: list[PhaseState]
    files: list[FileState]
    """In the order they were first saved."""
    tokens: TokenTotals
    verification: Verification | None
    """The latest verify round's outcome, the terminal event's once there is one."""
    error: str | None
    counts: dict[str, int]
    """Events by type, 1..``seq``."""
    marks: list[Mark]
    """The events of 1..``seq`` a timeline marks (see ``Mark``), in seq order: the last
    ``MARKS_MAX`` of them."""
    marks_dropped: int
    """How many marks came before ``marks``' first and were left out (0 but on a long run)."""
    model_text: str
    """The end of the model's text (``llm.delta``), at most ``MODEL_TEXT_CHARS`` characters."""
    model_text_truncated: bool
    """Whether the model wrote more than ``model_text`` holds."""
    last_event: dict[str, Any]
    """Event ``seq`` itself, as the stream would have sent it."""


def _round_key(data: Mapping[str, Any], stage: str, retries: int) -> tuple[str, int, int]:
    """A phase's identity: its name, and for a verify or repair round the round and the
    attempt of the run (a retried run verifies again from round 1)."""
    if "round" in data:
        return (str(data.get("phase") or stage), int(data["round"]), retries)
    return (str(data.get("phase") or stage), 0, 0)


class Reduction:
    """Events in, a ``SnapshotData`` out. Feed events in seq order with ``apply``; deltas
    may instead be counted with ``skip_deltas`` (their text then comes from ``model_tail``)."""

    def __init__(self) -> None:
        self._phases: dict[tuple[str, int, int], PhaseState] = {}
        self._retries = 0
        self._current: PhaseState | None = None
        self._files: dict[str, FileState] = {}
        self._counts: dict[str, int] = {}
        self._first: Mapping[str, Any] | None = None
        self._last: Mapping[str, Any] | None = None
        self._attempt = 0
        self._provider: str | None = None
        self._model: str | None = None
        self._verification: Verification | None = None
        self._error: str | None = None
        self._text: list[str] = []
        self._text_chars = 0
        self._text_truncated = False
        self._marks: deque[Mark] = deque(maxlen=MARKS_MAX)
        self._marks_dropped = 0

    def apply(self, event: Mapping[str, Any]) -> None:
        kind = event["type"]
        data: Mapping[str, Any] = event.get("data") or {}
        self._first = self._first or event
        self._last = event
        self._counts[kind] = self._counts.get(kind, 0) + 1
        if kind == EventType.LLM_DELTA:
            if self._current is not None:
                self._current["deltas"] += 1
            self._add_text(str(data.get("text", "")))
        elif kind in (EventType.STARTED, EventType.RESUMED):
            self._attempt = int(data.get("attempt", self._attempt))
            if kind == EventType.STARTED:
                self._provider, self._model = data.get("provider"), data.get("model")
        elif kind == EventType.PHASE_STARTED:
            self._phase_started(event, data)
        elif kind == EventType.PHASE_COMPLETED:
            self._phase_completed(event, data)
        elif kind == EventType.CHECK_COMPLETED and self._current is not None:
            self._current["checks"].append(data)  # type: ignore[arg-type]
        elif kind == EventType.LLM_RETRYING and self._current is not None:
            self._current["retries"] += 1
        elif kind == EventType.LLM_WAITING and self._current is not None:
            self._current["waits"] += 1
        elif kind == EventType.FILE_SAVED:
            self._file_saved(event, data)
        elif kind == EventType.RETRIED:
            self._retries += 1
            self._error = None
            self._verification = None  # the next attempt verifies again
        if kind in MARKED_TYPES:
            self._mark(event, data)
        if kind in TERMINAL_TYPES:
            self._ended(kind, data)

    def skip_deltas(self, count: int) -> None:
        """``count`` deltas came here, unread: counted, their text left to ``model_tail``."""
        if count <= 0:
            return
        self._counts[EventType.LLM_DELTA] = self._counts.get(EventType.LLM_DELTA, 0) + count
        if self._current is not None:
            self._current["deltas"] += count

    def model_tail(self, texts_newest_first: list[str], more_before: bool) -> None:
        """The model's text from its end backwards, at least ``MODEL_TEXT_CHARS`` of it when
        there is that much; ``more_before``: it wrote text before the oldest of these."""
        self._text, self._text_chars = [], 0
        for text in texts_newest_first:
            if self._text_chars >= MODEL_TEXT_CHARS:
                more_before = more_before or bool(text)
                break
            self._text.append(text)
            self._text_chars += len(text)
        self._text.reverse()
        self._text_truncated = more_before or self._text_chars > MODEL_TEXT_CHARS

    def ends_with(self, event: Mapping[str, Any]) -> None:
        """Event N, when it is a delta counted by ``skip_deltas``: the snapshot's envelope."""
        self._last = event

    def _add_text(self, text: str) -> None:
        if not text:
            return
        self._text.append(text)
        self._text_chars += len(text)
        while self._text_chars - len(self._text[0]) >= MODEL_TEXT_CHARS:
            self._text_chars -= len(self._text.pop(0))
            self._text_truncated = True
        if self._text_chars > MODEL_TEXT_CHARS:
            self._text_truncated = True

    def _phase_started(self, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        key = _round_key(data, event["stage"], self._retries)
        phase = self._phases.get(key)
        if phase is None:
            phase = PhaseState(
                phase=key[0],
                number=int(data.get("number", 0)),
                of=int(data.get("of", 0)),
                status="running",
                starts=0,
                attempt=0,
                provider=str(data.get("provider", "")),
                model=data.get("model"),
                retried=self._retries,
                first_started_at=event["timestamp"],
                started_at=event["timestamp"],
                completed_at=None,
                duration_ms=None,
                requests=None,
                prompt_tokens=0,
                output_tokens=0,
                files=0,
                deltas=0,
                retries=0,
                waits=0,
                checks=[],
            )
            if "round" in data:
                phase["round"] = int(data["round"])
            self._phases[key] = phase
        phase["status"] = "running"
        phase["starts"] += 1
        phase["attempt"] = int(data.get("attempt", 0))
        phase["started_at"] = event["timestamp"]
        phase["checks"] = []  # a restarted verify round checks again from the start
        self._current = phase
        if phase["starts"] > 1:
            self._mark(event, data)

    def _mark(self, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        if len(self._marks) == MARKS_MAX:
            self._marks_dropped += 1  # the deque drops its oldest
        self._marks.append(
            Mark(
                seq=int(event["seq"]),
                type=str(event["type"]),
                timestamp=str(event["timestamp"]),
                stage=str(event["stage"]),
                data=dict(data),
            )
        )

    def _phase_completed(self, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        phase = self._phases.get(_round_key(data, event["stage"], self._retries))
        if phase is None:
            return
        phase["status"] = "completed"
        phase["completed_at"] = event["timestamp"]
        phase["duration_ms"] = int(data.get("duration_ms", 0))
        phase["requests"] = int(data.get("attempts", 0))
        phase["prompt_tokens"] = int(data.get("prompt_tokens", 0))
        phase["output_tokens"] = int(data.get("output_tokens", 0))
        phase["files"] = int(data.get("files", 0))
        phase["provider"] = str(data.get("provider", phase["provider"]))
        phase["model"] = data.get("model", phase["model"])
        if "verification" in data:
            phase["verification"] = data["verification"]
            self._verification = data["verification"]
        if self._current is phase:
            self._current = None

    def _file_saved(self, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
        path = str(data.get("path", ""))
        known = self._files.get(path)
        self._files[path] = FileState(
            path=path,
            size=int(data.get("size", 0)),
            sha256=str(data.get("sha256", "")),
            language=str(data.get("language", "")),
            seq=int(event["seq"]),
            versions=known["versions"] + 1 if known else 1,
        )

    def _ended(self, kind: str, data: Mapping[str, Any]) -> None:
        for phase in self._phases.values():
            if phase["status"] == "running":
                phase["status"] = "stopped"
        self._current = None
        if "verification" in data:
            self._verification = data["verification"]
        if kind == EventType.FAILED:
            self._error = data.get("error")

    def snapshot(self) -> SnapshotData:
        if self._first is None or self._last is None:
            raise ValueError("a snapshot stands for at least one event")
        last = self._last
        return SnapshotData(
            generation_id=str(last["generation_id"]),
            seq=int(last["seq"]),
            chain=str(last.get("chain", "")),
            status=str(last["status"]),
            stage=str(last["stage"]),
            progress=float(last["progress"]),
            message=str(last["message"]),
            timestamp=str(last["timestamp"]),
            created_at=str(self._first["timestamp"]),
            attempt=self._attempt,
            provider=self._provider,
            model=self._model,
            phases=list(self._phases.values()),
            files=list(self._files.values()),
            tokens=TokenTotals(
                prompt_tokens=sum(phase["prompt_tokens"] for phase in self._phases.values()),
                output_tokens=sum(phase["output_tokens"] for phase in self._phases.values()),
            ),
            verification=self._verification,
            error=self._error,
            counts=dict(self._counts),
            marks=list(self._marks),
            marks_dropped=self._marks_dropped,
            model_text="".join(self._text)[-MODEL_TEXT_CHARS:],
            model_text_truncated=self._text_truncated,
            last_event=dict(last),
        )
