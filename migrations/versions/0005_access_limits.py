"""Access limits: keys that expire, record their last use and carry their own quotas; an index
for counting an owner's unfinished runs.

Quotas are checked in the create's own transaction under a per-owner advisory lock, so two
processes creating for one owner at the same instant cannot both slip under the limit. A NULL
quota on a key means "the deployment's default" (a setting), so a default can change without
touching every key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

QUOTAS = ("max_active_runs", "runs_per_minute", "max_streams")


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
    for quota in QUOTAS:
        op.add_column("api_keys", sa.Column(quota, sa.Integer, nullable=True))
        op.create_check_constraint(f"api_keys_{quota}_check", "api_keys", f"{quota} >= 0")
    op.create_index(
        "generations_owner_unfinished_idx",
        "generations",
        ["owner"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("generations_owner_unfinished_idx", table_name="generations")
    for quota in QUOTAS:
        op.drop_constraint(f"api_keys_{quota}_check", "api_keys")
        op.drop_column("api_keys", quota)
    op.drop_column("api_keys", "last_used_at")
    op.drop_column("api_keys", "expires_at")
