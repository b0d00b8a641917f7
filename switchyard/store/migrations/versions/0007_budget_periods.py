"""Budgets that reset: a period (daily, weekly, monthly) for key budgets and for the new
organisation budgets, and the start of the period each one's spend counts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("budget_period", sa.String(16), nullable=True))
        batch.add_column(sa.Column("period_start", sa.BigInteger, nullable=True))
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("budget_nanos", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("budget_period", sa.String(16), nullable=True))
        batch.add_column(sa.Column("spent_nanos", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("period_start", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        for name in ("period_start", "spent_nanos", "budget_period", "budget_nanos"):
            batch.drop_column(name)
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("period_start")
        batch.drop_column("budget_period")
