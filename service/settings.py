"""One typed settings object, read once from the environment.

This is the only module that reads the environment. Every field is documented here and in
the README's configuration table, under the variable it is read from (tests/test_settings.py
holds both to that).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Configuration of one genstream process."""

    model_config = SettingsConfigDict(env_prefix="GENSTREAM_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        validation_alias="DATABASE_URL",
        description="PostgreSQL URL. Unset: an embedded cluster under data_dir is started.",
    )
    replica_url: str | None = Field(
        default=None,
        description="PostgreSQL URL of a hot standby of the database: catch-up pages, the events "
        "endpoint, export, replay and `/api/stats` read there (falling back to the primary "
        "while it lags). Unset: every read on the primary.",
    )
    replica_wait_s: float = Field(
        default=0.05,
        ge=0,
        le=10,
        description="How long a read waits for the standby to replay what the primary has "
        "before it reads the primary instead.",
    )
    database_pooler: Literal["none", "transaction"] = Field(
        default="none",
        description="What DATABASE_URL reaches: PostgreSQL itself (`none`) or a pooler in "
        "transaction mode such as PgBouncer (`transaction`): then every query is sent as an "
        "unnamed statement, nothing session-level is sent or relied on, and the LISTEN "
        "connection and migrations go to direct_url.",
    )
    direct_url: str | None = Field(
        default=None,
        description="PostgreSQL itself, past any pooler: the LISTEN connection (which needs a "
        "session of its own) and migrations use it. Unset: DATABASE_URL. Required when "
        "database_pooler is `transaction`.",
    )
    host: str = Field(
        default="127.0.0.1", validation_alias="HOST", description="Address `serve` listens on."
    )
    port: int = Field(
        default=8000,
        ge=0,
        le=65535,
        validation_alias="PORT",
        description="Port `serve` listens on.",
    )
    data_dir: Path = Field(
        default=PROJECT_ROOT / ".data",
        description="Where the embedded cluster and the generated dev secret live.",
    )
    stream_token_secret: str | None = Field(
        default=None,
        description="HMAC secret for stream tokens. Unset: one is generated into data_dir.",
    )
    stream_token_ttl_s: int = Field(
        default=3600,
        gt=0,
        description="Stream token lifetime: a leaked token stops working after it.",
    )
    keepalive_s: float = Field(
        default=15.0, gt=0, description="Longest gap between keepalive comments on an idle stream."
    )
    sse_retry_ms: int = Field(default=2000, ge=0, description="The SSE `retry:` hint.")
    all_runs_stream_max_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long one `GET /api/stream` connection lasts: then it ends after a "
        "frame and the client resumes from its id, so long-lived dashboards spread over the "
        "serve processes again after a deploy or a scale-out.",
    )
    wakeup_check_s: float = Field(
        default=5.0, gt=0, description="How often streams check for a lost wake-up."
    )
    stream_page_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Events read per query while replaying (and per shared read at the live edge).",
    )
    max_body_bytes: int = Field(
        default=256 * 1024, ge=1024, description="Request bodies above this get 413."
    )
    pool_min_size: int = Field(
        default=1, ge=0, description="Connections the asyncpg pool of a process keeps open."
    )
    pool_max_size: int = Field(
        default=10, ge=1, description="Most connections the asyncpg pool of a process opens."
    )
    worker_concurrency: int = Field(
        default=4, ge=0, description="Runs executed at once by `serve`; 0 disables its worker."
    )
    worker_poll_s: float = Field(
        default=5.0, gt=0, description="Fallback poll for queued runs when no NOTIFY arrives."
    )
    offline_delay_s: float = Field(
        default=0.05, ge=0, description="Pause between chunks of the offline provider."
    )
    listener_reconnect_max_s: float = Field(
        default=5.0, gt=0, description="Cap of the LISTEN connection's reconnect backoff."
    )
    lease_s: float = Field(
        default=30.0, gt=0, description="A worker's hold on a run; renewed every third of it."
    )
    run_attempts_max: int = Field(
        default=5, ge=1, description="Claims of one run before it ends as failed."
    )
    owner_max_active_runs: int = Field(
        default=20,
        ge=0,
        le=2**31 - 1,
        description="Queued + running generations per owner; beyond it a create gets 429. "
        "A key's own quota overrides it; 0: no limit.",
    )
    owner_runs_per_minute: int = Field(
        default=60,
        ge=0,
        le=2**31 - 1,
        description="Generations an owner may create in any 60 s; beyond it 429. 0: no limit.",
    )
    owner_max_streams: int = Field(
        default=100,
        ge=0,
        le=2**31 - 1,
        description="Open SSE streams per owner in one process; beyond it 429. 0: no limit.",
    )
    delta_flush_s: float = Field(
        default=0.1, ge=0, description="Coalesce llm.delta text for at most this long..."
    )
    delta_flush_bytes: int = Field(default=2048, ge=1, description="...or this many bytes.")
    llm_waiting_s: float = Field(
        default=10.0,
        gt=0,
        description="While a model sends nothing for this long, the run appends `llm.waiting` "
        "(and again each time as long again), so readers see a slow model is not a dead worker.",
    )
    phase_restarts_max: int = Field(
        default=2, ge=0, description="Restarts of a phase whose stream broke mid-answer."
    )
    gemini_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        description="Enables provider 'gemini'. Unset: only the offline provider runs.",
    )
    gemini_model: str = Field(default="gemini-3.8-flash", description="Default Gemini model.")
    gemini_base_url: str | None = Field(
        default=None, description="Override of the Gemini API endpoint (tests, proxies)."
    )
    gemini_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest wait for Gemini's first or next chunk."
    )
    gemini_attempts: int = Field(
        default=4, ge=1, description="Tries per call on 429/5xx/connection errors before text."
    )
    gemini_backoff_s: float = Field(
        default=0.5, ge=0, description="First retry delay; doubles, capped, full jitter."
    )
    gemini_backoff_max_s: float = Field(
        default=8.0, ge=0, description="Cap of the exponential backoff between Gemini tries."
    )
    openai_base_url: str | None = Field(
        default=None,
        description="An OpenAI-compatible chat-completions API, e.g. http://127.0.0.1:11434/v1 "
        "(Ollama); it, or an openai_api_key, enables provider 'openai'. Unset: api.openai.com.",
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key for openai_base_url; enables provider 'openai' too. Unset: a "
        "placeholder is sent (local servers such as Ollama or vLLM need none).",
    )
    openai_model: str = Field(
        default="gpt-4o-mini", description="Default model of provider 'openai'."
    )
    openai_timeout_s: float = Field(
        default=60.0, gt=0, description="Longest wait for the OpenAI API's first or next chunk."
    )
    openai_attempts: int = Field(
        default=4, ge=1, description="Tries per call on 429/5xx/connection errors before text."
    )
    openai_backoff_s: float = Field(
        default=0.5, ge=0, description="First retry delay; doubles, capped, full jitter."
    )
    openai_backoff_max_s: float = Field(
        default=8.0, ge=0, description="Cap of the exponential backoff between OpenAI API tries."
    )
    request_read_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="A request (head and body) must arrive within this long of its connection "
        "opening (on a kept-alive one, of its first byte); else `serve` closes the connection.",
    )
    keepalive_timeout_s: int = Field(
        default=5,
        ge=1,
        description="An HTTP connection idle between requests is closed after this long "
        "(not the keepalive comments of streams: keepalive_s).",
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        description="Connections one `serve` process holds, streams included; a request "
        "beyond them gets 503 with Retry-After.",
    )

    verify_default: Literal["off", "compile", "tests"] = Field(
        default="tests",
        description="How far a generation's code is verified when its request does not say "
        "(`verify`): `tests` (compiles, imports, its tests pass), `compile` or `off`.",
    )
    redact_after_days: float | None = Field(
        default=None,
        gt=0,
        description="`python -m service retention` replaces the model's text, checks' output "
        "and file contents of runs finished longer ago by a marker, keeping every event's "
        "skeleton. Unset: never.",
    )
    drop_after_days: float | None = Field(
        default=None,
        gt=0,
        description="`python -m service retention` drops runs finished longer ago, whole: a "
        "period's partition at once when every run in it is that old. Unset: never.",
    )
    repair_attempts: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Repairs a model may make of code that failed verification, each verified "
        "again, before the generation fails.",
    )
    verify_cpu_s: int = Field(
        default=120,
        ge=1,
        description="CPU seconds each process of a verification step may use (RLIMIT_CPU).",
    )
    verify_wall_s: float = Field(
        default=180.0,
        gt=0,
        description="Wall time of one verification step; then its whole sandbox is killed.",
    )
    verify_memory_mb: int = Field(
        default=2048,
        ge=64,
        description="Memory each process of a verification step may map for its data: heap, "
        "anonymous mappings and thread stacks (RLIMIT_DATA).",
    )
    verify_processes: int = Field(
        default=512,
        ge=8,
        description="Processes and threads a verification step may run at once (RLIMIT_NPROC "
        "of the sandbox's own user).",
    )
    verify_file_mb: int = Field(
        default=16, ge=1, description="Largest file a verification step may write (RLIMIT_FSIZE)."
    )
    verify_disk_mb: int = Field(
        default=128,
        ge=8,
        description="Size of the sandbox's private tmpfs, the only place a step may write: the "
        "project's files and whatever its tests write.",
    )
    verify_output_kb: int = Field(
        default=64,
        ge=1,
        description="Tail of a verification step's output that is kept (a step that writes "
        "more than 16 MB is stopped).",
    )

    forwarded_allow_ips: str = Field(
        default="127.0.0.1",
        description="Comma-separated addresses (or `*`) of proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto `serve` believes: the request log then names the real client.",
    )
    log_format: Literal["json", "console"] = Field(
        default="console",
        description="Log lines as JSON objects (for a log pipeline) or text for a terminal.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="The least severe log level written."
    )
    partition_period: Literal["month", "week", "day"] = Field(
        default="month",
        description="How much time one partition of the event log holds (`month`, `week`, "
        "`day`): runs are kept and dropped a whole period at a time.",
    )
    partitions_ahead: int = Field(
        default=3,
        ge=0,
        le=366,
        description="Periods of the event log created ahead of the current one (at start and "
        "hourly).",
    )
    metrics_address: str | None = Field(
        default=None,
        description="host:port where /metrics is also served without a key (a `worker` has "
        "no other port). Unset: only the API port's /metrics, for admin keys.",
    )

    otel_traces_exporter: str | None = Field(
        default=None,
        validation_alias="OTEL_TRACES_EXPORTER",
        description="OpenTelemetry's standard variable: `otlp` or `console` turns traces on "
        "(needs the `otel` extra); unset or `none`: off.",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OpenTelemetry's standard variable: where OTLP/HTTP traces go; setting it "
        "turns traces on. The exporter reads its other OTEL_* variables itself.",
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("metrics_address")
    @classmethod
    def _host_and_port(cls, value: str | None) -> str | None:
        if not value:
            return None
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464 or 0.0.0.0:9464")
        return value

    @field_validator("openai_base_url")
    @classmethod
    def _http_url_or_unset(cls, value: str | None) -> str | None:
        if not value:
            return None  # blank is unset
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:11434/v1")
        return value

    @field_validator("database_url", "direct_url")
    @classmethod
    def _postgres_url_or_unset(cls, value: str | None) -> str | None:
        if not value:
            return None  # blank is unset
        if not value.startswith(("postgres://", "postgresql://", "postgresql+asyncpg://")):
            raise ValueError("must be a postgresql:// URL (or unset for the embedded cluster)")
        return value

    @field_validator("replica_url")
    @classmethod
    def _postgres_replica_url_or_unset(cls, value: str | None) -> str | None:
        if not value:
            return None  # blank is unset: every read on the primary
        if not value.startswith(("postgres://", "postgresql://", "postgresql+asyncpg://")):
            raise ValueError("must be a postgresql:// URL of a hot standby (or unset)")
        return value

    @model_validator(mode="after")
    def _direct_url_behind_a_pooler(self) -> Settings:
        # LISTEN through a transaction pooler is accepted and then silently never delivers:
        # the server connection that ran it goes back to the pool. Refused here instead.
        if self.database_pooler == "transaction" and not self.direct_url:
            raise ValueError(
                "GENSTREAM_DATABASE_POOLER=transaction needs GENSTREAM_DIRECT_URL: PostgreSQL "
                "itself, for the LISTEN connection and migrations"
            )
        return self

    @cached_property
    def secret_file(self) -> Path:
        return self.data_dir / "stream-token-secret"


class ClientSettings(BaseSettings):
    """What ``follow`` reads: it is a client of a genstream server (any, local or not), so
    these say which server and with what key; they configure no genstream process, and the
    README's configuration table (of a process's settings) leaves them out."""

    model_config = SettingsConfigDict(env_prefix="GENSTREAM_", extra="ignore", frozen=True)

    url: str | None = Field(
        default=None,
        description="The server `follow` talks to when no --url is given "
        "(unset: http://127.0.0.1:8000).",
    )
    api_key: SecretStr | None = Field(
        default=None,
        description="The API key `follow` sends; read from the environment only, never from "
        "a flag, so that it stays out of shell history and process lists.",
    )


def get_settings() -> Settings:
    return Settings()


def environment_variable(field: str) -> str:
    """The variable a user sets for ``field``: its alias, or the prefixed name."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{Settings.model_config.get('env_prefix', '')}{field}".upper()
