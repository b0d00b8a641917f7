"""The console: users, memberships, sessions, one-time invitations; usage rollups per minute
and hour (filled from the records already there); time to first byte and attempts per record.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_MEASURES = ("requests", "errors", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens",
             "image_tokens", "cost_nanos", "latency_ms")


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("ttfb_ms", sa.Integer, nullable=True))
    op.add_column("usage_records", sa.Column("attempts", sa.Integer, nullable=True))
    op.add_column("api_keys", sa.Column("owner_user_id", sa.String(40), nullable=True))
    op.create_table(
        "users",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False, unique=True),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("is_operator", sa.Boolean, nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("disabled_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id"), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_memberships_org", "memberships", ["org_id"])
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
    )
    op.create_index("ix_console_sessions_user_id", "console_sessions", ["user_id"])
    op.create_table(
        "invitations",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("org_id", sa.String(40), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("created_by", sa.String(40), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("used_at", sa.BigInteger, nullable=True),
        sa.Column("used_by", sa.String(40), nullable=True),
    )
    op.create_table(
        "usage_rollups",
        sa.Column("span", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("org_id", sa.String(40), primary_key=True),
        sa.Column("key_id", sa.String(40), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("deployment", sa.String(200), primary_key=True),
        *[sa.Column(name, sa.BigInteger, nullable=False) for name in _MEASURES],
    )
    op.create_index("ix_rollups_org", "usage_rollups", ["org_id", "span", "bucket"])
    # What was recorded before rollups existed, summed once.
    for span in (60_000, 3_600_000):
        op.execute(
            f"INSERT INTO usage_rollups (span, bucket, org_id, key_id, model, deployment, {', '.join(_MEASURES)}) "
            f"SELECT {span}, created_at - created_at % {span}, org_id, key_id, model, deployment, "
            "SUM(CASE WHEN status IN ('refused', 'failed') THEN 0 ELSE 1 END), "
            "SUM(CASE WHEN status IN ('refused', 'failed') THEN 1 ELSE 0 END), "
            "SUM(input_tokens), SUM(cached_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(image_tokens), "
            "SUM(cost_nanos), SUM(latency_ms) "
            f"FROM usage_records GROUP BY created_at - created_at % {span}, org_id, key_id, model, deployment"
        )


def downgrade() -> None:
    op.drop_table("usage_rollups")
    op.drop_table("invitations")
    op.drop_table("console_sessions")
    op.drop_table("memberships")
    op.drop_table("users")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("owner_user_id")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("attempts")
        batch.drop_column("ttfb_ms")
