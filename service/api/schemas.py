"""Request and response bodies, as the OpenAPI document shows them."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Final, Literal, Union
from uuid import UUID

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Reference, SecurityRequirement, SecurityScheme
from pydantic import BaseModel, ConfigDict, Field, RootModel, create_model, model_validator

from service.events import EVENT_DATA, EventType, Status, status_after
from service.snapshot import SnapshotData
from service.spec import Spec, refuse_nul
from service.store.generations import Generation


class CreateGeneration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: Spec
    provider: Literal["offline", "gemini", "openai"] | None = None
    model: str | None = Field(default=None, min_length=1, max_length=100)
    verify: Literal["off", "compile", "tests"] | None = Field(
        default=None,
        description="How far the generated code is checked before the run may succeed: "
        "`tests` (every Python file compiles, the app module imports, the generated tests "
        "pass), `compile` (every Python file compiles) or `off`. Absent: the server's "
        "default, `tests` unless its operator changed it.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: object) -> object:
        """Every text field of the body, wherever it is, before anything else reads it."""
        return refuse_nul(data)


class Created(BaseModel):
    id: UUID
    status: Status
    stream_url: str
    stream_token: str
    events_url: str


class StreamToken(BaseModel):
    stream_url: str
    stream_token: str
    expires_in: int


class GenerationState(BaseModel):
    id: UUID
    status: Status
    stage: str
    message: str
    progress: float
    last_seq: int
    provider: str
    model: str | None
    verify: Literal["off", "compile", "tests"]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None

    @classmethod
    def of(cls, generation: Generation) -> GenerationState:
        return cls.model_validate(generation, from_attributes=True)


class GenerationPage(BaseModel):
    items: list[GenerationState]
    next_cursor: str | None


class CancelAccepted(BaseModel):
    id: UUID
    status: Status


class RetryAccepted(BaseModel):
    id: UUID
    status: Status


class FileEntry(BaseModel):
    path: str
    size: int
    sha256: str
    language: str
    seq: int


class FileList(BaseModel):
    files: list[FileEntry]


class StatsDay(BaseModel):
    """One UTC calendar day of ``Stats.days``: the runs created that day."""

    day: date = Field(description="The UTC calendar day (`YYYY-MM-DD`) the runs were created.")
    total: int = Field(ge=0, description="Runs created that day, whatever their outcome.")
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    cancelled: int = Field(ge=0)
    in_progress: int = Field(ge=0, description="Queued or running now.")
    p50_duration_s: float | None = Field(
        description="Median seconds from queued to the terminal event of that day's finished "
        "runs; null when none has finished."
    )
    p95_duration_s: float | None = Field(description="The same, 95th percentile.")


class ModelTokens(BaseModel):
    """One provider and model of ``Stats.tokens_by_model``."""

    provider: str
    model: str | None = Field(description="Null when the provider named none (offline).")
    phases: int = Field(ge=0, description="Completed phases that reported tokens.")
    prompt: int = Field(ge=0, description="Prompt (input) tokens.")
    output: int = Field(ge=0, description="Output tokens.")


class Stats(BaseModel):
    """``GET /api/stats``: counts by outcome, seconds (null when nothing to measure yet),
    tokens, and how often runs needed recovering, over all the caller's generations; and the
    last ``days`` days one by one."""

    generations: dict[str, int] = Field(
        description="Runs by outcome: `total`, `succeeded`, `failed`, `cancelled`, "
        "`in_progress` (queued or running)."
    )
    duration_s: dict[str, float | None] = Field(
        description="`p50` and `p95` seconds from queued to the terminal event."
    )
    to_first_event_s: dict[str, float | None] = Field(
        description="`p50` and `p95` seconds from queued to the next event (a worker took it)."
    )
    to_first_file_s: dict[str, float | None] = Field(
        description="`p50` and `p95` seconds from queued to the first saved file."
    )
    tokens: dict[str, int] = Field(description="Model tokens: `prompt` and `output`.")
    recoveries: dict[str, int] = Field(
        description="Occurrences by kind: `resumed`, `phase_retry`, `repair`, `retried`, "
        "`failed` (docs/analytics.md, `analytics_recoveries`)."
    )
    days: list[StatsDay] = Field(
        description="One entry per UTC calendar day of the last `days` days (the query "
        "parameter), oldest first, ending today; a day without runs has zeros."
    )
    tokens_by_model: list[ModelTokens] = Field(
        description="`tokens` per provider and model, most tokens (prompt + output) first; "
        "their sums equal `tokens`."
    )


class EventEnvelope(BaseModel):
    """What every event carries, whatever its type (``docs/CONTRACT.md``, "The event")."""

    generation_id: UUID
    seq: int = Field(ge=1, description="1, 2, 3, ... per generation: no gap, no repeat.")
    stage: str
    progress: float = Field(ge=0, le=1)
    message: str = Field(description="For people; its wording may change.")
    timestamp: datetime = Field(description="When the event was committed (UTC).")
    chain: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256, hex, of the previous event's `chain` (64 zeros before seq 1) "
        "followed by this event's JSON text without this member: drop "
        '`,"chain":"..."` (its last member) and hash the rest as received. A reader that '
        "keeps the chain proves it saw every event, unaltered (docs/CONTRACT.md).",
    )


def _event_model(event_type: EventType) -> type[EventEnvelope]:
    """``FileSavedEvent`` for ``file.saved``: the envelope, the type's status and its data."""
    name = "".join(word.capitalize() for word in event_type.replace(".", "_").split("_"))
    fields: dict[str, Any] = {
        "type": (Literal[event_type.value], ...),
        "status": (Literal[status_after(event_type).value], ...),
        "data": (EVENT_DATA[event_type], ...),
    }
    return create_model(f"{name}Event", __base__=EventEnvelope, **fields)


EVENT_MODELS: Final = {event_type: _event_model(event_type) for event_type in EventType}


_ANY_EVENT: Any = Union[tuple(EVENT_MODELS.values())]  # noqa: UP007 (built from a tuple)


class Event(RootModel[Any]):
    """One event of the log; ``type`` says which, and what ``data`` holds. A reader must
    ignore types and data keys it does not know: newer servers add them."""

    root: Annotated[_ANY_EVENT, Field(discriminator="type")]


class EventsPage(BaseModel):
    """``GET /api/generations/{id}/events``: a page of one generation's log, in seq order."""

    events: list[Event]
    next_after: int = Field(description="Pass as ``after`` for the next page.")
    has_more: bool
    snapshot: SnapshotData | None = Field(
        default=None,
        description="Asked for with `snapshot=1` from the start: the run reduced up to event "
        "`snapshot.seq`; `events` start after it. Absent otherwise.",
    )


class FeedPage(BaseModel):
    """``GET /api/events``: a page of the global feed."""

    events: list[Event]
    next_cursor: str = Field(
        description="Pass back as ``after``, as received; the same cursor again when the page "
        "is empty (nothing new yet)."
    )


class Readiness(BaseModel):
    """``GET /readyz``: ``ready`` (200), or ``unavailable`` (503) with the reason in ``detail``
    and, when the schema is behind, the revisions it is at and should be at."""

    model_config = ConfigDict(populate_by_name=True)

    status: Literal["ready", "unavailable"]
    listener: bool | None = Field(
        default=None, description="Whether this process's LISTEN connection is up (200 only)."
    )
    schema_state: Literal["at head", "ahead"] | None = Field(
        default=None,
        alias="schema",
        description="``ahead``: a newer release migrated the database; this process still "
        "serves (migrations only add).",
    )
    detail: str | None = None
    current: list[str] | None = None
    head: list[str] | None = None


class Problem(BaseModel):
    """Every error answer: ``status`` repeats the HTTP status, ``detail`` says what to do."""

    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="On a 400 from validation: each problem, its key and message."
    )
    reason: str | None = Field(
        default=None,
        description="On a 410: the retention policy that removed it "
        "(`python -m service retention`).",
    )
    at: datetime | None = Field(default=None, description="On a 410: when it was removed.")


def problem(description: str) -> ResponseSpec:
    """An error answer for an operation's OpenAPI ``responses``."""
    return ResponseSpec(data_container=Problem, description=description)


OVER_QUOTA = problem("Over a quota; the Retry-After header says when to try again.")


API_KEY: Final = "apiKey"
STREAM_TOKEN: Final = "streamToken"  # noqa: S105 (a scheme's name, not a secret)
SECURITY_SCHEMES: Final[dict[str, SecurityScheme | Reference]] = {
    API_KEY: SecurityScheme(
        type="http",
        scheme="bearer",
        description="An API key (`python -m service keys create --owner NAME`) in "
        "`Authorization: Bearer gsk_...`. Never accepted in a URL.",
    ),
    STREAM_TOKEN: SecurityScheme(
        type="apiKey",
        name="token",
        security_scheme_in="query",
        description="The `stream_token` of `POST /api/generations` (or `.../stream-token`): "
        "one generation's stream only, for EventSource, which cannot send headers.",
    ),
}
NO_CREDENTIALS: Final[list[SecurityRequirement]] = [{}]
"""An operation anyone may call (an empty requirement: no credentials)."""
