"""Selling access: redemption codes (batches, hashed codes), referrals (each organisation's
code, who referred it), ledger entries linked to their cause and marked when reversed, the
price group an organisation buys at; cache writes in the rollups, and an index for pruning.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "code_batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("value_nanos", sa.BigInteger, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("org_id", sa.String(40), nullable=True),
        sa.Column("tier", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "redemption_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("batch_id", sa.String(40), sa.ForeignKey("code_batches.id"), nullable=False),
        sa.Column("hint", sa.String(16), nullable=False),
        sa.Column("redeemed_at", sa.BigInteger, nullable=True),
        sa.Column("org_id", sa.String(40), nullable=True),
        sa.Column("user_id", sa.String(40), nullable=True),
        sa.Column("entry_id", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_redemption_codes_batch", "redemption_codes", ["batch_id"])
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("referral_code", sa.String(16), nullable=True))
        batch.add_column(sa.Column("referred_by", sa.String(40), nullable=True))
        batch.add_column(sa.Column("referred_at", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("price_group", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_organizations_referral_code", ["referral_code"])
    op.add_column("ledger_entries", sa.Column("cause_id", sa.BigInteger, nullable=True))
    op.add_column("ledger_entries", sa.Column("source", sa.String(64), nullable=True))
    op.add_column("ledger_entries", sa.Column("reversed_at", sa.BigInteger, nullable=True))
    op.create_index("ix_ledger_cause", "ledger_entries", ["cause_id"])
    # Rollups carry cache writes too (the usage API reads them now, records may be pruned),
    # filled from the records already there.
    op.add_column("usage_rollups", sa.Column("cache_write_tokens", sa.BigInteger, nullable=False, server_default="0"))
    op.execute(
        "UPDATE usage_rollups SET cache_write_tokens = COALESCE((SELECT SUM(u.cache_write_tokens) FROM usage_records u "
        "WHERE u.org_id = usage_rollups.org_id AND u.key_id = usage_rollups.key_id AND u.model = usage_rollups.model "
        "AND u.deployment = usage_rollups.deployment AND u.created_at >= usage_rollups.bucket "
        "AND u.created_at < usage_rollups.bucket + usage_rollups.span), 0)")
    op.create_index("ix_usage_time", "usage_records", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_time", "usage_records")
    with op.batch_alter_table("usage_rollups") as batch:
        batch.drop_column("cache_write_tokens")
    op.drop_index("ix_ledger_cause", "ledger_entries")
    with op.batch_alter_table("ledger_entries") as batch:
        batch.drop_column("reversed_at")
        batch.drop_column("source")
        batch.drop_column("cause_id")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_constraint("uq_organizations_referral_code", type_="unique")
        batch.drop_column("price_group")
        batch.drop_column("referred_at")
        batch.drop_column("referred_by")
        batch.drop_column("referral_code")
    op.drop_table("redemption_codes")
    op.drop_table("code_batches")
