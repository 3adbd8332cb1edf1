"""The log is partitioned by time: ``generation_events`` and ``generated_files`` become
``PARTITION BY RANGE (generation_id)``, one partition per period (``store/partitions.py``).

Zero copy: each existing table is renamed to ``<table>_default`` (its indexes and
constraints too), a partitioned parent is made in its image under the old name (same
columns, defaults, CHECKs, primary key, foreign key and indexes, all built instantly on an
empty parent), and the old table is ATTACHed as the DEFAULT partition: PostgreSQL adopts its
existing indexes and constraints instead of building new ones, and with no other partition
there is nothing to check. Views over the log bind to a table's identity, not its name, so
every view that read the old table is redefined over the parent. Then the current period and
the ones ahead are created (``GENSTREAM_PARTITION_PERIOD``, ``GENSTREAM_PARTITIONS_AHEAD``),
moving the legacy rows whose v4 ids fall in their ranges; each creation scans the default
once (see partitions.py's docstring for the cost and the README for how to run it online).

Unique indexes of a partitioned table must contain the partition key: the primary keys
(generation_id, seq) and (generation_id, path) and the idempotency index (generation_id,
idempotency_key) all do.

The periods are made with store/partitions.py's statements, the ones the service runs: not
frozen here, as a view's text would be, because they must agree with what the service does
next. Each period made here costs a sequential scan of the legacy rows under the lock this
migration holds; on a large log, migrate with ``GENSTREAM_PARTITIONS_AHEAD=0`` (only the
current period is made here) and let the service make the coming ones: it fences them first,
so their scan runs while reads and appends go on (partitions.py's docstring).

The downgrade copies every period's rows back into the default (a real copy, unlike the
upgrade), detaches it and gives it the old name back.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from service.settings import Settings
from service.store.partitions import TABLES, create_period, missing_periods

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

# A table's indexes that no constraint owns, as CREATE INDEX statements.
SELECT_INDEXES = """
SELECT i.relname AS name, pg_get_indexdef(i.oid) AS definition
FROM pg_index AS x
JOIN pg_class AS i ON i.oid = x.indexrelid
WHERE x.indrelid = CAST(:table AS regclass)
  AND NOT EXISTS (SELECT FROM pg_constraint AS c WHERE c.conindid = i.oid)
ORDER BY i.relname
"""

# A table's primary key and foreign keys (CHECKs and NOT NULLs come with LIKE).
SELECT_KEYS = """
SELECT conname AS name, pg_get_constraintdef(oid) AS definition, contype::text AS contype
FROM pg_constraint
WHERE conrelid = CAST(:table AS regclass)
  AND contype IN ('p', 'f')
ORDER BY contype DESC, conname
"""

# Every view that reads a table, with its definition (names as written: it is re-run later).
SELECT_VIEWS = """
SELECT DISTINCT v.relname AS name, pg_get_viewdef(v.oid) AS definition
FROM pg_depend AS d
JOIN pg_rewrite AS r ON r.oid = d.objid
JOIN pg_class AS v ON v.oid = r.ev_class
WHERE d.refobjid = CAST(:table AS regclass)
  AND v.oid <> d.refobjid
ORDER BY v.relname
"""


def _rows(sql: str, table: str) -> list[sa.Row[tuple[str, ...]]]:
    return list(op.get_bind().execute(sa.text(sql), {"table": table}))


def _views() -> list[tuple[str, str]]:
    views = {row.name: row.definition for t in TABLES for row in _rows(SELECT_VIEWS, t)}
    return sorted(views.items())


def upgrade() -> None:
    views = _views()
    for table in TABLES:
        default = f"{table}_default"
        indexes = _rows(SELECT_INDEXES, table)
        keys = _rows(SELECT_KEYS, table)
        op.execute(f"ALTER TABLE {table} RENAME TO {default}")
        for index in indexes:
            op.execute(f"ALTER INDEX {index.name} RENAME TO {_renamed(index.name, table)}")
        for key in keys:
            if key.contype == "p":  # renames its index too
                op.execute(
                    f"ALTER TABLE {default} RENAME CONSTRAINT {key.name} "
                    f"TO {_renamed(key.name, table)}"
                )
        op.execute(
            f"CREATE TABLE {table} (LIKE {default} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
            "PARTITION BY RANGE (generation_id)"
        )
        for key in keys:
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT {key.name} {key.definition}")
        for index in indexes:  # the text names the table as it was: now the parent
            op.execute(index.definition)
        # Adopts the default's indexes and constraints, instead of building them again.
        op.execute(f"ALTER TABLE {table} ATTACH PARTITION {default} DEFAULT")
    for name, definition in views:
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {definition}")

    settings = Settings()
    now = datetime.now(UTC)
    for table in TABLES:
        for lower, upper in missing_periods(
            [], settings.partition_period, settings.partitions_ahead, now
        ):
            for statement in create_period(table, lower, upper):
                op.execute(statement)


def downgrade() -> None:
    views = _views()
    for table in TABLES:
        default = f"{table}_default"
        periods = [
            row[0]
            for row in op.get_bind().execute(
                sa.text(
                    "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c "
                    "ON c.oid = i.inhrelid WHERE i.inhparent = CAST(:table AS regclass) "
                    "AND c.relname <> :default"
                ),
                {"table": table, "default": default},
            )
        ]
        for name in periods:
            op.execute(f"ALTER TABLE {table} DETACH PARTITION {name}")
            op.execute(f"INSERT INTO {default} SELECT * FROM {name}")
            op.execute(f"DROP TABLE {name}")
        op.execute(f"ALTER TABLE {table} DETACH PARTITION {default}")
        fences = op.get_bind().execute(
            sa.text(
                "SELECT conname FROM pg_constraint WHERE conrelid = CAST(:default AS regclass) "
                "AND conname LIKE :fence"
            ),
            {"default": default, "fence": f"{default}_fence_%"},
        )
        for (fence,) in list(fences):  # left by a period that was being made
            op.execute(f"ALTER TABLE {default} DROP CONSTRAINT {fence}")
        op.execute(f"ALTER TABLE {table} RENAME TO {table}_partitioned")
        op.execute(f"ALTER TABLE {default} RENAME TO {table}")
    for name, definition in views:  # the text names the log's tables: now the plain ones
        op.execute(f"CREATE OR REPLACE VIEW {name} AS {definition}")
    for table in TABLES:
        indexes = _rows(SELECT_INDEXES, f"{table}_partitioned")
        keys = _rows(SELECT_KEYS, f"{table}_partitioned")
        op.execute(f"DROP TABLE {table}_partitioned")
        for index in indexes:
            op.execute(f"ALTER INDEX {_renamed(index.name, table)} RENAME TO {index.name}")
        for key in keys:
            if key.contype == "p":
                op.execute(
                    f"ALTER TABLE {table} RENAME CONSTRAINT {_renamed(key.name, table)} "
                    f"TO {key.name}"
                )


def _renamed(name: str, table: str) -> str:
    """The default partition's name for the parent's index or key ``name``."""
    return f"{table}_default{name.removeprefix(table)}"
