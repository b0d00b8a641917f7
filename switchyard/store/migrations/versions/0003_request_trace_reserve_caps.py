"""Every request leaves a usage record (refused and failed ones at zero cost, with their status
and error code); where a record's usage came from and what an upstream over-reported;
reservation caps on organisations and keys.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("http_status", sa.Integer, nullable=False, server_default="200"))
    op.add_column("usage_records", sa.Column("error_code", sa.String(64), nullable=True))
    op.add_column("usage_records", sa.Column("error_param", sa.String(200), nullable=True))
    op.add_column("usage_records", sa.Column("usage_source", sa.String(16), nullable=False, server_default="upstream"))
    op.add_column("usage_records", sa.Column("anomaly", sa.String(200), nullable=True))
    op.add_column("organizations", sa.Column("max_reserve_tokens", sa.Integer, nullable=True))
    op.add_column("api_keys", sa.Column("max_reserve_tokens", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("max_reserve_tokens")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("max_reserve_tokens")
    with op.batch_alter_table("usage_records") as batch:
        for name in ("anomaly", "usage_source", "error_param", "error_code", "http_status"):
            batch.drop_column(name)
