"""Tables. Money columns are BIGINT nano-dollars; times are BIGINT epoch milliseconds.

Integers keep money exact and times bucketable the same way on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("tier", String(64), nullable=False),
    Column("price_multiplier", String(32), nullable=False),  # a Decimal, e.g. "0.7" for 30% off
    Column("prepaid", Boolean, nullable=False),  # postpaid orgs are metered but never refused for funds
    Column("balance_nanos", BigInteger, nullable=False),  # always equals the sum of its ledger entries
    Column("overdraft_nanos", BigInteger, nullable=False),
    Column("rpm_limit", Integer, nullable=True),  # overrides the tier when set
    Column("tpm_limit", BigInteger, nullable=True),
    Column("max_reserve_tokens", Integer, nullable=True),  # output reserved for requests without a limit
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    Column("referral_code", String(16), nullable=True, unique=True),  # its own, made on first use
    Column("referred_by", String(40), nullable=True),  # the organisation whose link it signed up through
    Column("referred_at", BigInteger, nullable=True),
    Column("price_group", String(64), nullable=True),  # per-model prices of a group (config `price_groups`)
    # A spending cap of its own (beside a prepaid balance), optionally per period, like a key's.
    Column("budget_nanos", BigInteger, nullable=True),
    Column("budget_period", String(16), nullable=True),  # daily | weekly | monthly | null (for good)
    Column("spent_nanos", BigInteger, nullable=False, server_default="0"),  # in the period from period_start
    Column("period_start", BigInteger, nullable=True),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False, index=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 hex; the key itself is never stored
    Column("key_hint", String(32), nullable=False),  # e.g. "sk-sy-…Ab3x", to tell keys apart in lists
    Column("allowed_models", Text, nullable=True),  # JSON list; null = every model
    Column("budget_nanos", BigInteger, nullable=True),  # null = no key budget (the org balance still applies)
    Column("spent_nanos", BigInteger, nullable=False),
    Column("overdraft_nanos", BigInteger, nullable=False),
    Column("rpm_limit", Integer, nullable=True),
    Column("tpm_limit", BigInteger, nullable=True),
    Column("cache_ttl_seconds", Integer, nullable=True),  # response cache on by default for this key
    Column("max_reserve_tokens", Integer, nullable=True),  # overrides the organisation's
    Column("expires_at", BigInteger, nullable=True),
    Column("revoked_at", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("owner_user_id", String(40), nullable=True),  # the console user who created it
    Column("budget_period", String(16), nullable=True),  # daily | weekly | monthly | null (for good)
    Column("period_start", BigInteger, nullable=True),  # the period spent_nanos counts (null: all time)
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), nullable=False),
    Column("key_id", String(40), nullable=True),
    Column("kind", String(16), nullable=False),  # topup reserve settle release refund adjustment
    Column("amount_nanos", BigInteger, nullable=False),  # signed: what this entry adds to the balance
    Column("request_id", String(64), nullable=True),
    Column("note", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    # The entry that earned this one (a referral credit's top-up) or that it reverses.
    Column("cause_id", BigInteger, nullable=True),
    Column("source", String(64), nullable=True),  # code_batch:<id> for redemptions, referee:<org> for referral credits
    Column("reversed_at", BigInteger, nullable=True),  # set once, when a reversal entry undoes this one
    Index("ix_ledger_org_id_id", "org_id", "id"),
    Index("ix_ledger_request", "request_id"),
    Index("ix_ledger_cause", "cause_id"),
)

# Redemption codes: sold in batches, stored hashed, each redeemed at most once.
code_batches = Table(
    "code_batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("value_nanos", BigInteger, nullable=False),
    Column("count", Integer, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Column("org_id", String(40), nullable=True),  # only this organisation may redeem them
    Column("tier", String(64), nullable=True),  # only organisations on this tier
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
)

redemption_codes = Table(
    "redemption_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),  # sha256 hex of the normalised code
    Column("batch_id", String(40), ForeignKey("code_batches.id"), nullable=False),
    Column("hint", String(16), nullable=False),  # the code's last characters, to tell codes apart
    Column("redeemed_at", BigInteger, nullable=True),
    Column("org_id", String(40), nullable=True),
    Column("user_id", String(40), nullable=True),
    Column("entry_id", BigInteger, nullable=True),  # the ledger entry that credited it
    Index("ix_redemption_codes_batch", "batch_id"),
)

# Statuses of requests that reached no answer: recorded at zero cost, not counted as requests served.
UNSERVED = ("refused", "failed")

usage_records = Table(
    "usage_records",
    metadata,
    Column("request_id", String(64), primary_key=True),  # one record per request: billed exactly once
    Column("org_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("model", String(200), nullable=False),  # the public name the client used
    Column("deployment", String(200), nullable=False),
    Column("endpoint", String(64), nullable=False),
    # completed, partial (upstream broke mid-stream), cancelled (client left), cache_hit;
    # refused (before any upstream: 4xx) and failed (no upstream answered), both at zero cost
    Column("status", String(16), nullable=False),
    Column("stream", Boolean, nullable=False),
    Column("service_tier", String(16), nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("image_tokens", BigInteger, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("http_status", Integer, nullable=False, server_default="200"),
    Column("error_code", String(64), nullable=True),
    Column("error_param", String(200), nullable=True),
    Column("usage_source", String(16), nullable=False, server_default="upstream"),  # upstream | counted | none
    Column("anomaly", String(200), nullable=True),  # usage reported past the request's bounds, billed at them
    Column("ttfb_ms", Integer, nullable=True),  # until the first answer (or first stream chunk) arrived
    Column("attempts", Integer, nullable=True),  # deployments tried, fallbacks included
    Column("units", String(300), nullable=True),  # media quantities billed: `audio_ms=90500 image.hd.1024x1024=1`
    Index("ix_usage_org_time", "org_id", "created_at"),
    Index("ix_usage_key_time", "key_id", "created_at"),
    Index("ix_usage_time", "created_at"),  # the pruner's walk, oldest first
)

# Every change an operator makes (key, balance, tier, price) appends a row; each worker polls
# the tail so its in-memory view follows within a second without reading the database per request.
changes = Table(
    "changes",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("entity", String(16), nullable=False),  # org | key
    Column("entity_id", String(40), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

# Uploaded files: metadata here, bytes on disk under the data directory (files/<org>/<id>).
files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=True),
    Column("filename", String(500), nullable=False),
    Column("purpose", String(32), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=True),
    Index("ix_files_org_time", "org_id", "created_at"),
)

# Stored Responses API objects (`store: true`), written in the same transaction as their bill.
responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("previous_response_id", String(64), nullable=True),
    Column("body", Text, nullable=False),  # the response object as returned (JSON)
    Column("input_items", Text, nullable=False),  # this turn's input items, with ids (JSON list)
    Column("created_at", BigInteger, nullable=False),
    Index("ix_responses_org", "org_id", "created_at"),
)

batches = Table(
    "batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), nullable=False),
    Column("key_id", String(40), nullable=False),
    Column("endpoint", String(64), nullable=False),
    Column("model", String(200), nullable=True),
    Column("input_file_id", String(40), nullable=False),
    Column("completion_window", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("output_file_id", String(40), nullable=True),
    Column("error_file_id", String(40), nullable=True),
    Column("errors", Text, nullable=True),  # JSON list of {code, message, param, line}
    Column("metadata", Text, nullable=True),  # JSON object
    Column("total", Integer, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("in_progress_at", BigInteger, nullable=True),
    Column("expires_at", BigInteger, nullable=False),
    Column("finalizing_at", BigInteger, nullable=True),
    Column("completed_at", BigInteger, nullable=True),
    Column("failed_at", BigInteger, nullable=True),
    Column("expired_at", BigInteger, nullable=True),
    Column("cancelling_at", BigInteger, nullable=True),
    Column("cancelled_at", BigInteger, nullable=True),
    # Which worker runs it, until when: another worker (or a restarted one) takes over after.
    Column("lease_owner", String(64), nullable=True),
    Column("lease_until", BigInteger, nullable=True),
    Index("ix_batches_org_time", "org_id", "created_at"),
    Index("ix_batches_status", "status"),
)

# One row per answered batch line. A billed line's row commits with its bill, so after a
# restart the lines without a row are exactly the ones still to run.
batch_results = Table(
    "batch_results",
    metadata,
    Column("batch_id", String(40), primary_key=True),
    Column("line", Integer, primary_key=True),
    Column("custom_id", String(512), nullable=False),
    Column("ok", Boolean, nullable=False),  # false: goes to the error file
    Column("output", Text, nullable=False),  # the output (or error) file line, JSON
    Column("input_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
)

# ---- the console: people, their organisations, their sessions --------------------------------

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),  # stored lower-cased
    Column("display_name", String(200), nullable=False),
    Column("password_hash", String(200), nullable=False),  # argon2id, parameters inside the hash
    Column("is_operator", Boolean, nullable=False),  # platform admin: sees every organisation
    Column("failed_logins", Integer, nullable=False, server_default="0"),  # since the last success
    Column("locked_until", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("disabled_at", BigInteger, nullable=True),
)

memberships = Table(
    "memberships",
    metadata,
    Column("user_id", String(40), ForeignKey("users.id"), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id"), primary_key=True),
    Column("role", String(16), nullable=False),  # owner | member | billing
    Column("created_at", BigInteger, nullable=False),
    Index("ix_memberships_org", "org_id"),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", String(64), primary_key=True),  # sha256 of the cookie's token; the token is never stored
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False, index=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Column("user_agent", String(300), nullable=True),
)

# One-time links: an invitation into an organisation, or (org_id null, role operator) the
# first operator's set-up link.
invitations = Table(
    "invitations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("org_id", String(40), nullable=True),
    Column("role", String(16), nullable=False),
    Column("email", String(320), nullable=True),  # when set, only this address may accept
    Column("created_by", String(40), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger, nullable=True),
    Column("used_by", String(40), nullable=True),
)

# Usage summed per minute and per hour at settlement, in the bill's own transaction: charts
# and totals read these, never a scan of raw records. `span` is 60000 or 3600000 (ms).
usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("span", Integer, primary_key=True),
    Column("bucket", BigInteger, primary_key=True),  # epoch ms at the bucket's start
    Column("org_id", String(40), primary_key=True),
    Column("key_id", String(40), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("deployment", String(200), primary_key=True),
    Column("requests", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    Column("image_tokens", BigInteger, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("latency_ms", BigInteger, nullable=False),  # summed: divided by requests for the mean
    Column("cache_write_tokens", BigInteger, nullable=False, server_default="0"),
    Index("ix_rollups_org", "org_id", "span", "bucket"),
)

# Alerts: what each organisation watches and where it is told; the crossings fired (one row
# each, shared by every worker, gone when the condition is); the outbox and log of deliveries.
alert_settings = Table(
    "alert_settings",
    metadata,
    Column("org_id", String(40), primary_key=True),
    Column("webhook_url", String(500), nullable=True),
    Column("webhook_secret", String(100), nullable=True),
    Column("email", String(320), nullable=True),
    Column("balance_below_nanos", BigInteger, nullable=True),
    Column("budget_percents", String(64), nullable=True),  # "80,100"
    Column("key_hourly_nanos", BigInteger, nullable=True),  # a key's spend in one hour past this is a spike
    Column("updated_at", BigInteger, nullable=False),
)

alert_states = Table(
    "alert_states",
    metadata,
    Column("org_id", String(40), primary_key=True),
    Column("kind", String(32), primary_key=True),
    Column("subject", String(200), primary_key=True),
    Column("fired_at", BigInteger, nullable=False),
)

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("org_id", String(40), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("channel", String(16), nullable=False),  # webhook | email
    Column("target", String(500), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(16), nullable=False),  # pending | sending | retry | delivered | failed
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(500), nullable=True),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Index("ix_alert_deliveries_due", "status", "next_attempt_at"),
    Index("ix_alert_deliveries_org", "org_id", "id"),
)
