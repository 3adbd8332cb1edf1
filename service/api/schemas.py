"""Request and response bodies, as the OpenAPI document shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal
from uuid import UUID

from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Reference, SecurityRequirement, SecurityScheme
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.events import Status
from service.spec import Spec, refuse_nul
from service.store.generations import Generation


class CreateGeneration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    spec: Spec
    provider: Literal["offline", "gemini", "openai"] | None = None
    model: str | None = Field(default=None, min_length=1, max_length=100)

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


class FileEntry(BaseModel):
    path: str
    size: int
    sha256: str
    language: str
    seq: int


class FileList(BaseModel):
    files: list[FileEntry]


class Stats(BaseModel):
    """``GET /api/stats``: counts by outcome, seconds (null when nothing to measure yet),
    tokens, and how often runs needed recovering."""

    generations: dict[str, int]
    duration_s: dict[str, float | None]
    to_first_event_s: dict[str, float | None]
    to_first_file_s: dict[str, float | None]
    tokens: dict[str, int]
    recoveries: dict[str, int]


class Problem(BaseModel):
    """Every error answer: ``status`` repeats the HTTP status, ``detail`` says what to do."""

    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="On a 400 from validation: each problem, its key and message."
    )


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
