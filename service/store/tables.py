"""The schema as SQLAlchemy Core metadata: the reference the Alembic migrations are checked
against (``tests/store/test_tables.py``). Runtime SQL is written by hand for asyncpg in the
modules beside this one, because the hot paths (one-statement append, JSON rendered by
PostgreSQL and passed through untouched) are simpler and faster as plain SQL.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSON, JSONB, UUID

metadata = sa.MetaData()
NOW = sa.text("clock_timestamp()")

generations = sa.Table(
    "generations",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("progress", sa.Float, nullable=False, server_default=sa.text("0")),
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    sa.Column("spec", JSON, nullable=False),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("claimed_by", sa.Text, nullable=True),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    # The W3C trace context of the creating request (observe/traces.py); NULL untraced.
    sa.Column("trace_context", JSONB, nullable=True),
    # How far the run's code is verified (``off``, ``compile``, ``tests``): its request's choice.
    sa.Column("verify", sa.Text, nullable=False, server_default="off"),
    # When retention redacted the run's log (migration 0013); NULL: not (yet).
    sa.Column("redacted_at", sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("verify IN ('off', 'compile', 'tests')", name="generations_verify_check"),
    sa.CheckConstraint(
        "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
        name="generations_status_check",
    ),
    sa.CheckConstraint("progress >= 0 AND progress <= 1", name="generations_progress_check"),
    sa.Index(
        "generations_owner_created_idx", "owner", sa.text("created_at DESC"), sa.text("id DESC")
    ),
    sa.Index(
        "generations_claimable_idx",
        "created_at",
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    ),
    sa.Index(
        "generations_owner_unfinished_idx",
        "owner",
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    ),
    sa.Index(
        "generations_unredacted_idx",
        "finished_at",
        postgresql_where=sa.text("redacted_at IS NULL AND finished_at IS NOT NULL"),
    ),
)

generation_events = sa.Table(
    "generation_events",
    metadata,
    sa.Column(
        "generation_id",
        UUID(as_uuid=True),
        sa.ForeignKey("generations.id", ondelete="RESTRICT"),
        primary_key=True,
    ),
    sa.Column("seq", sa.BigInteger, primary_key=True),
    sa.Column("type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("stage", sa.Text, nullable=False),
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("payload", JSONB, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    # Set by workers: an append retried after an unknown COMMIT outcome is not stored twice.
    sa.Column("idempotency_key", sa.Text, nullable=True),
    # The storing transaction (pg_current_xact_id()): the global feed's commit-safe order.
    sa.Column(
        "tx_id",
        sa.BigInteger,
        nullable=False,
        server_default=sa.text("(pg_current_xact_id())::text::bigint"),
    ),
    # SHA-256 of the previous event's chain and this event's JSON (migration 0009); a row
    # written by hand, not by the append, gets zeros, which no chain holds.
    sa.Column(
        "chain",
        sa.LargeBinary,
        nullable=False,
        server_default=sa.text("'\\x" + "00" * 32 + "'::bytea"),
    ),
    # When retention replaced the bulky part of its payload by a marker (migration 0013).
    sa.Column("redacted_at", sa.DateTime(timezone=True), nullable=True),
    # The run's owner, for the owner feed's index (migration 0014). NULL in rows stored before
    # that migration; a trigger fills it in a row stored without it.
    sa.Column("owner", sa.Text, nullable=True),
    sa.CheckConstraint("seq >= 1", name="generation_events_seq_check"),
    sa.CheckConstraint("octet_length(chain) = 32", name="generation_events_chain_check"),
    sa.Index("generation_events_feed_idx", "tx_id", "generation_id", "seq"),
    sa.Index("generation_events_owner_feed_idx", "owner", "tx_id", "generation_id", "seq"),
    sa.Index("generation_events_type_idx", "type", "created_at"),
    # Every event but the model's text, for snapshots (migration 0010).
    sa.Index(
        "generation_events_milestones_idx",
        "generation_id",
        "seq",
        postgresql_where=sa.text("type <> 'llm.delta'"),
    ),
    sa.Index(
        "generation_events_idempotency_key_idx",
        "generation_id",
        "idempotency_key",
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    ),
    # One partition per period of generation ids (UUIDv7: creation time) and a DEFAULT one
    # (store/partitions.py, migration 0012); the partitions are not part of this metadata.
    postgresql_partition_by="RANGE (generation_id)",
)

generated_files = sa.Table(
    "generated_files",
    metadata,
    sa.Column(
        "generation_id",
        UUID(as_uuid=True),
        sa.ForeignKey("generations.id", ondelete="RESTRICT"),
        primary_key=True,
    ),
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("sha256", sa.Text, nullable=False),
    sa.Column("language", sa.Text, nullable=False),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    # When retention emptied its content (size and sha256 stay); migration 0013.
    sa.Column("redacted_at", sa.DateTime(timezone=True), nullable=True),
    postgresql_partition_by="RANGE (generation_id)",
)

retention_drops = sa.Table(
    "retention_drops",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    # Runs with ids in [low, high) are gone: a period's partition, or one run (owner set).
    sa.Column("low", UUID(as_uuid=True), nullable=False),
    sa.Column("high", UUID(as_uuid=True), nullable=False),
    sa.Column("owner", sa.Text, nullable=True),
    sa.Column("dropped_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("generations", sa.BigInteger, nullable=False),
    sa.Column("events", sa.BigInteger, nullable=False),
    sa.CheckConstraint("low < high", name="retention_drops_range_check"),
    sa.Index("retention_drops_run_idx", "low", postgresql_where=sa.text("owner IS NOT NULL")),
    sa.Index("retention_drops_period_idx", "low", postgresql_where=sa.text("owner IS NULL")),
)

# One row: the first transaction id whose events all carry their owner (migration 0014); the
# owner feed reads events below it through the runs' rows.
event_owner_since = sa.Table(
    "event_owner_since",
    metadata,
    sa.Column("one", sa.Boolean, primary_key=True, server_default=sa.true()),
    sa.Column("tx_id", sa.BigInteger, nullable=False),
    sa.CheckConstraint("one", name="event_owner_since_one_check"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", UUID(as_uuid=True), primary_key=True),
    sa.Column("owner", sa.Text, nullable=False),
    sa.Column("key_hash", sa.LargeBinary, nullable=False, unique=True),
    sa.Column("prefix", sa.Text, nullable=False),
    sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
    # Per-key quotas; NULL: the deployment's default (GENSTREAM_OWNER_*).
    sa.Column("max_active_runs", sa.Integer, nullable=True),
    sa.Column("runs_per_minute", sa.Integer, nullable=True),
    sa.Column("max_streams", sa.Integer, nullable=True),
    sa.CheckConstraint("max_active_runs >= 0", name="api_keys_max_active_runs_check"),
    sa.CheckConstraint("runs_per_minute >= 0", name="api_keys_runs_per_minute_check"),
    sa.CheckConstraint("max_streams >= 0", name="api_keys_max_streams_check"),
)
