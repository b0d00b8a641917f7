"""Settings: defaults, then the config file (`SWITCHYARD_CONFIG`), then `SWITCHYARD_*` env vars.

The CLI turns its flags into environment variables before starting workers, so every worker
process builds the same `Settings` from the same sources.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
from pathlib import Path
from typing import Any

import yaml

LOCAL_EMBEDDING_MODEL = "multilingual-e5-small"
LOCAL_MODEL_NAME = "smollm2-135m-instruct"
DEFAULT_ALIAS = "default"
# How a model group orders its deployments (after filtering by capability, size and health):
# priority = config order; the others order deployments of equal priority.
STRATEGIES = ("priority", "cheapest", "latency", "least_busy", "weighted")


class ConfigError(ValueError):
    """The configuration file or environment is invalid."""


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    read: float = 600.0  # the longest silence while an answer is awaited or streamed
    total: float = 1200.0  # the longest one upstream call may take, first byte to last


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """The web console at /console."""

    signup: str = "invite"  # closed: operators add people; invite: by one-time link; open: anyone
    signup_credit_usd: str = "0"  # what an organisation created by open sign-up starts with
    public_pricing: bool = False  # /console/pricing for people without an account
    session_hours: float = 168.0  # a session lasts this long from login
    login_max_failures: int = 10  # wrong passwords in a row before the account locks
    lockout_minutes: float = 15.0
    setup_link_hours: float = 24.0  # the first operator's link, and invitations (x7)


@dataclass(frozen=True, slots=True)
class ReferralSettings:
    """The referral program (`referral:`): a share of each referred organisation's top-ups and
    redemptions, credited to the organisation whose link it signed up through."""

    percent: str = "0"  # "10" for 10%; 0 turns the program off
    cap_usd: str = ""  # the most one referred organisation earns its referrer, for good ("": no cap)
    months: int = 0  # credits only within this many months of the sign-up (0: for good)


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """Alerts (`alerts:`): how they are sent. Each organisation says where, and what to watch."""

    retry_seconds: float = 5.0  # the first retry of a failed delivery; each next one waits twice as long
    webhook_timeout_seconds: float = 10.0
    smtp_host: str = ""  # email is sent only when set
    smtp_port: int = 25
    smtp_from: str = "switchyard@localhost"
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password_env: str = "SWITCHYARD_SMTP_PASSWORD"
    operator_webhook: str = ""  # the operators' own alerts (a deployment's breaker opening)
    operator_email: str = ""


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """Budgets that reset (`budgets:`): the calendar their periods follow."""

    timezone: str = "UTC"  # an IANA name: daily budgets reset at its midnight, monthly on its 1st


@dataclass(frozen=True, slots=True)
class UsageSettings:
    """Request records (`usage:`): the per-request log; the per-minute and hourly sums stay for good."""

    retention_days: int = 0  # records older than this are pruned in the background (0: kept for good)
    prune_batch: int = 1000  # records deleted per statement while pruning


@dataclass(frozen=True, slots=True)
class CreditSettings:
    """Redemption codes (`credits:`)."""

    redeem_per_minute: int = 10  # redemption attempts per key or console user, against guessing
    redeem_per_minute_per_ip: int = 30  # and per client address, whatever key it uses


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """What one client connection or request may take of a worker."""

    keep_alive_seconds: float = 5.0  # an idle keep-alive connection is closed after this
    header_seconds: float = 10.0  # a request's headers must arrive within this
    body_idle_seconds: float = 30.0  # the longest pause while a request body arrives
    body_seconds: float = 120.0  # a JSON body must arrive whole within this
    max_connections: int = 2048  # per worker; past it, connections still sending headers are cut first
    max_messages: int = 20_000  # chat messages in one request
    max_input_items: int = 20_000  # Responses input items in one request
    max_json_nodes: int = 100_000  # JSON objects and arrays in one body: refused before parsing
    max_json_depth: int = 200  # nesting (at most 240): deeper bodies cannot be re-encoded for an upstream
    max_image_upload_bytes: int = 50 * 1024 * 1024  # one input image of an edit (OpenAI's limit for GPT image)
    max_audio_upload_bytes: int = 25 * 1024 * 1024  # one audio file to transcribe (OpenAI's limit)


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Fetching URLs a client names (remote images for cost estimates): never internal addresses."""

    allow_hosts: tuple[str, ...] = ()  # host names (or ".suffix") exempt from the address check
    allow_networks: tuple[str, ...] = ()  # CIDR networks exempt from it, e.g. an internal image host
    max_images_per_request: int = 16
    per_key_per_minute: int = 120
    timeout_seconds: float = 10.0
    max_bytes: int = 1 << 20


@dataclass(frozen=True, slots=True)
class DeploymentConfig:
    """One place a public model name can be served from."""

    provider: str
    model: str  # the model id the upstream knows
    catalog: str  # catalog entry giving prices, limits, capabilities
    id: str
    base_url: str | None = None
    api_key_env: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeouts: Timeouts = field(default_factory=Timeouts)
    context_window: int | None = None  # overrides the catalog (e.g. a server started with a smaller window)
    max_output_tokens: int | None = None
    weight: int = 1  # share of traffic under the `weighted` strategy
    priority: int = 0  # lower is tried first; strategies order deployments within a priority
    retries: int = 1  # extra attempts on this deployment before falling back to the next
    default_max_tokens: int | None = None  # output limit for requests that set none (None: the model's max)
    max_response_bytes: int = 32 * 1024 * 1024  # a non-streamed answer larger than this fails
    max_stream_bytes: int = 256 * 1024 * 1024  # a stream past this many bytes is cut off
    options: Mapping[str, Any] = field(default_factory=dict)  # provider-specific settings


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    data_dir: Path = Path("./data")
    config_path: Path | None = None
    master_key: str | None = None
    api_keys: tuple[str, ...] = ()
    models: Mapping[str, tuple[DeploymentConfig, ...]] = field(default_factory=dict)
    aliases: Mapping[str, str] = field(default_factory=dict)
    strategies: Mapping[str, str] = field(default_factory=dict)  # public name -> routing strategy
    smart_routing: Mapping[str, Any] | None = None  # the `switchyard/auto` model: rules picking a tier
    catalog_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    max_body_bytes: int = 64 * 1024 * 1024
    log_level: str = "info"
    database_url: str | None = None  # default: SQLite in the data directory
    sqlite_synchronous: str = "NORMAL"
    redis_url: str | None = None  # shared rate limits for several workers or replicas
    tiers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    default_output_estimate: int = 1024  # rate-limit tokens counted for a request with no max_tokens
    files_max_bytes: int = 512 * 1024 * 1024  # largest upload to /v1/files
    files_batch_max_bytes: int = 200 * 1024 * 1024  # largest `batch` input file (OpenAI's limit)
    batch_concurrency: int = 4  # batch lines one worker runs at once (across its batches)
    batch_completion_window_seconds: int = 24 * 3600  # a batch not done by then expires ("24h")
    batch_lease_seconds: int = 30  # a crashed worker's batches are taken over after this long
    timeouts: Timeouts = field(default_factory=Timeouts)  # defaults for every deployment
    limits: ServerLimits = field(default_factory=ServerLimits)
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    max_reserve_tokens: int | None = None  # output reserved for a request without a limit (None: model max)
    redis_max_connections: int = 256  # per worker, shared by limits, holds and the cache
    redis_pool_timeout: float = 10.0  # a burst waits this long for a free Redis connection
    hold_lease_seconds: float = 10.0  # a worker silent this long is presumed dead: its money holds are reaped
    settle_retry_seconds: float = 20.0  # how long a bill waits for an unreachable database before the request fails
    console: ConsoleSettings = field(default_factory=ConsoleSettings)
    referral: ReferralSettings = field(default_factory=ReferralSettings)
    # Per-model price factors for groups of organisations: {"resellers": {"gpt-5.2": 0.6, "*": 1}}.
    price_groups: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)
    credits: CreditSettings = field(default_factory=CreditSettings)
    usage: UsageSettings = field(default_factory=UsageSettings)
    budgets: BudgetSettings = field(default_factory=BudgetSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    metrics_token: str | None = None  # GET /metrics wants it as a Bearer token (else the admin key)
    metrics_enabled: bool = True  # metrics.enabled: false counts nothing (and /metrics is a 404)
    log_format: str = "plain"  # plain | json (one JSON object per line; one line per request)
    otlp_endpoint: str | None = None  # OpenTelemetry traces to this OTLP/HTTP collector (off when unset)
    trace_service_name: str = "switchyard"
    trace_sample_ratio: float = 0.02  # requests traced (besides those whose caller's traceparent is sampled): see README
    drain_seconds: float = 30.0  # on SIGTERM: how long requests in flight (streams) may take to finish

    @property
    def master_key_file(self) -> Path:
        return self.data_dir / "master_key.sha256"

    @property
    def served_models(self) -> frozenset[str]:
        """Every model name a client may send: public names, aliases, the smart-routing name."""
        names = set(self.models) | set(self.aliases)
        if self.smart_routing:
            names.add(str(self.smart_routing.get("model", "switchyard/auto")))
        return frozenset(names)


def _timeouts(raw: Any, where: str, base: Timeouts) -> Timeouts:
    if raw is None:
        return base
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}timeouts must be a mapping with connect/read/total seconds")
    unknown = set(raw) - {"connect", "read", "total"}
    if unknown:
        raise ConfigError(f"{where}timeouts: unknown field(s) {', '.join(sorted(unknown))}")
    try:
        out = Timeouts(connect=float(raw.get("connect", base.connect)), read=float(raw.get("read", base.read)),
                       total=float(raw.get("total", base.total)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}timeouts: {exc}") from None
    if min(out.connect, out.read, out.total) <= 0:
        raise ConfigError(f"{where}timeouts must be positive numbers of seconds")
    return out


def _section(raw: Any, cls: type[Any], where: str) -> Any:
    """A config section as its dataclass: known fields only, each of the default's type."""
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping")
    defaults = cls()
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if not hasattr(defaults, name):
            raise ConfigError(f"{where}.{name} is not a known setting")
        default = getattr(defaults, name)
        try:
            if isinstance(default, tuple):
                if not isinstance(value, list):
                    raise ValueError("must be a list")
                values[name] = tuple(str(v) for v in value)
            else:
                values[name] = type(default)(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.{name}: {exc}") from None
        if isinstance(values[name], (int, float)) and not isinstance(values[name], bool) and values[name] <= 0:
            raise ConfigError(f"{where}.{name} must be positive, not {value!r}")
    out = cls(**values)
    if getattr(out, "max_json_depth", 0) > 240:
        raise ConfigError(f"{where}.max_json_depth must be at most 240 (upstream requests nest a few levels more)")
    return out


def _deployment(public: str, index: int, raw: Any, timeouts: Timeouts = Timeouts()) -> DeploymentConfig:
    where = f"models.{public}.deployments[{index}]"
    if not isinstance(raw, Mapping) or "provider" not in raw:
        raise ConfigError(f"{where} must be a mapping with at least 'provider'")
    known = {
        "provider", "model", "catalog", "id", "base_url", "api_key_env", "headers",
        "timeouts", "context_window", "max_output_tokens", "weight", "priority", "retries",
        "default_max_tokens", "max_response_bytes", "max_stream_bytes",
    }
    try:
        weight, priority, retries = int(raw.get("weight", 1)), int(raw.get("priority", 0)), int(raw.get("retries", 1))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: weight, priority and retries must be integers") from None
    if weight < 0 or retries < 0:
        raise ConfigError(f"{where}: weight and retries must not be negative")
    sizes: dict[str, int] = {}
    for name in ("default_max_tokens", "max_response_bytes", "max_stream_bytes"):
        if raw.get(name) is not None:
            value = raw[name]
            if type(value) is not int or value < 1:
                raise ConfigError(f"{where}.{name} must be a positive integer, not {value!r}")
            sizes[name] = value
    model = str(raw.get("model") or public)
    return DeploymentConfig(
        provider=str(raw["provider"]),
        model=model,
        catalog=str(raw.get("catalog") or model),
        id=str(raw.get("id") or f"{public}#{index}"),
        base_url=raw.get("base_url"),
        api_key_env=raw.get("api_key_env"),
        headers=dict(raw.get("headers") or {}),
        timeouts=_timeouts(raw.get("timeouts"), where + ".", timeouts),
        context_window=raw.get("context_window"),
        max_output_tokens=raw.get("max_output_tokens"),
        weight=weight,
        priority=priority,
        retries=retries,
        options={k: v for k, v in raw.items() if k not in known},
        **sizes,
    )


def _models(raw: Any, timeouts: Timeouts = Timeouts()) -> dict[str, tuple[DeploymentConfig, ...]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("models must be a mapping of public model name to its deployments")
    out: dict[str, tuple[DeploymentConfig, ...]] = {}
    for public, spec in raw.items():
        deployments = spec.get("deployments") if isinstance(spec, Mapping) else spec
        if not isinstance(deployments, list) or not deployments:
            raise ConfigError(f"models.{public} needs a non-empty 'deployments' list")
        out[str(public)] = tuple(_deployment(str(public), i, d, timeouts) for i, d in enumerate(deployments))
    return out


def embedded_models(timeouts: Timeouts = Timeouts()) -> dict[str, tuple[DeploymentConfig, ...]]:
    """With no models configured, serve the local model so the first request works offline."""
    dep = DeploymentConfig(provider="local", model=LOCAL_MODEL_NAME, catalog=LOCAL_MODEL_NAME, id="local",
                           timeouts=timeouts)
    # Embeddings offline too; the model loads on the first embedding request, not at start.
    embedder = DeploymentConfig(provider="local", model=LOCAL_EMBEDDING_MODEL, catalog=LOCAL_EMBEDDING_MODEL,
                                id="local-embeddings", timeouts=timeouts)
    return {LOCAL_MODEL_NAME: (dep,), LOCAL_EMBEDDING_MODEL: (embedder,)}


def _optional_positive(value: Any, where: str) -> int | None:
    return None if value is None else _positive(value, where)


def _ratio(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"tracing.sample_ratio must be a number from 0 to 1, not {value!r}")
    return number


def _log_format(value: str) -> str:
    if value.lower() not in ("plain", "json"):
        raise ConfigError(f"log_format must be plain or json, not '{value}'")
    return value.lower()


def _positive_seconds(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = 0.0
    if not number > 0:
        raise ConfigError(f"{where} must be a positive number of seconds, not {value!r}")
    return number


def _positive(value: Any, where: str) -> int:
    number = int(value)
    if number < 1:
        raise ConfigError(f"{where} must be a positive integer, not {value!r}")
    return number


def _console(raw: Any) -> ConsoleSettings:
    console: ConsoleSettings = _section(raw, ConsoleSettings, "console")
    if console.signup not in ("closed", "invite", "open"):
        raise ConfigError(f"console.signup must be closed, invite or open, not '{console.signup}'")
    try:
        if Decimal(console.signup_credit_usd) < 0:
            raise InvalidOperation
    except InvalidOperation:
        raise ConfigError(f"console.signup_credit_usd must be a non-negative amount, not '{console.signup_credit_usd}'") from None
    return console


def _price_groups(raw: Any) -> dict[str, dict[str, Decimal]]:
    """`price_groups: {name: {model: factor, "*": factor}}`: factors as quoted decimals, like prices."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("price_groups must map group names to {model: factor}")
    groups: dict[str, dict[str, Decimal]] = {}
    for name, factors in raw.items():
        if not isinstance(factors, Mapping) or not factors:
            raise ConfigError(f"price_groups.{name} must map model names (or '*') to factors")
        groups[str(name)] = {}
        for model, factor in factors.items():
            try:
                if not isinstance(factor, str):
                    raise InvalidOperation
                value = Decimal(factor)
                if not value.is_finite() or value < 0:
                    raise InvalidOperation
            except InvalidOperation:
                raise ConfigError(f'price_groups.{name}.{model} must be a quoted non-negative decimal such as "0.6"') from None
            groups[str(name)][str(model)] = value
    return groups


def _budgets(raw: Any) -> BudgetSettings:
    budgets: BudgetSettings = _section(raw, BudgetSettings, "budgets")
    try:
        ZoneInfo(budgets.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"budgets.timezone: unknown time zone '{budgets.timezone}' (an IANA name such as "
                          "UTC or Europe/Berlin)") from None
    return budgets


def _usage(raw: Any) -> UsageSettings:
    usage: UsageSettings = _section(raw, UsageSettings, "usage")
    if usage.retention_days < 0 or usage.prune_batch < 1:
        raise ConfigError("usage.retention_days must not be negative and usage.prune_batch must be positive")
    return usage


def _referral(raw: Any) -> ReferralSettings:
    referral: ReferralSettings = _section(raw, ReferralSettings, "referral")
    try:
        if not 0 <= Decimal(referral.percent) <= 100 or (referral.cap_usd and Decimal(referral.cap_usd) < 0):
            raise InvalidOperation
    except InvalidOperation:
        raise ConfigError("referral.percent must be from 0 to 100 and referral.cap_usd a non-negative amount") from None
    if referral.months < 0:
        raise ConfigError("referral.months must not be negative")
    return referral


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    file: dict[str, Any] = {}
    config_path = env.get("SWITCHYARD_CONFIG")
    if config_path:
        path = Path(config_path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping")
        file = loaded
    server = file.get("server") or {}
    store = file.get("store") or {}

    def pick(env_name: str, key: str, default: Any) -> Any:
        if env.get(env_name):
            return env[env_name]
        return server.get(key, default)

    batch = file.get("batch") or {}

    def batch_pick(env_name: str, key: str, default: Any) -> Any:
        if env.get(env_name):
            return env[env_name]
        return batch.get(key, default)

    timeouts = _timeouts(file.get("timeouts"), "", Timeouts())
    models = _models(file.get("models"), timeouts) or embedded_models(timeouts)
    strategies = {
        str(name): str(spec.get("strategy", "priority"))
        for name, spec in (file.get("models") or {}).items() if isinstance(spec, Mapping)
    }
    for name, strategy in strategies.items():
        if strategy not in STRATEGIES:
            raise ConfigError(f"models.{name}.strategy must be one of {', '.join(STRATEGIES)}, not '{strategy}'")
    aliases = {str(k): str(v) for k, v in (file.get("aliases") or {}).items()}
    if DEFAULT_ALIAS not in aliases and DEFAULT_ALIAS not in models:
        aliases[DEFAULT_ALIAS] = next(iter(models))
    for alias, target in aliases.items():
        if target not in models:
            raise ConfigError(f"aliases.{alias} points at '{target}', which is not a configured model")

    if str(store.get("sqlite_synchronous", "NORMAL")).upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ConfigError("store.sqlite_synchronous must be one of OFF, NORMAL, FULL, EXTRA")
    keys = list((file.get("auth") or {}).get("keys") or [])
    keys += [k.strip() for k in env.get("SWITCHYARD_API_KEYS", "").split(",") if k.strip()]
    try:
        return Settings(
            host=str(pick("SWITCHYARD_HOST", "host", "127.0.0.1")),
            port=int(pick("SWITCHYARD_PORT", "port", 8080)),
            workers=int(pick("SWITCHYARD_WORKERS", "workers", 1)),
            data_dir=Path(pick("SWITCHYARD_DATA_DIR", "data_dir", "./data")).expanduser(),
            config_path=Path(config_path) if config_path else None,
            master_key=env.get("SWITCHYARD_MASTER_KEY") or None,
            api_keys=tuple(str(k) for k in keys),
            models=models,
            aliases=aliases,
            strategies=strategies,
            smart_routing=file.get("smart_routing"),
            catalog_overrides=file.get("catalog") or {},
            max_body_bytes=int(pick("SWITCHYARD_MAX_BODY_BYTES", "max_body_bytes", 64 * 1024 * 1024)),
            log_level=str(pick("SWITCHYARD_LOG_LEVEL", "log_level", "info")),
            database_url=env.get("SWITCHYARD_DATABASE_URL") or store.get("url"),
            sqlite_synchronous=str(store.get("sqlite_synchronous", "NORMAL")).upper(),
            redis_url=env.get("SWITCHYARD_REDIS_URL") or (file.get("redis") or {}).get("url"),
            tiers=file.get("tiers") or {},
            default_output_estimate=int((file.get("billing") or {}).get("default_output_estimate", 1024)),
            files_max_bytes=int(env.get("SWITCHYARD_FILES_MAX_BYTES")
                                or (file.get("files") or {}).get("max_bytes", 512 * 1024 * 1024)),
            files_batch_max_bytes=int(env.get("SWITCHYARD_FILES_BATCH_MAX_BYTES")
                                      or (file.get("files") or {}).get("batch_max_bytes", 200 * 1024 * 1024)),
            batch_concurrency=_positive(batch_pick("SWITCHYARD_BATCH_CONCURRENCY", "concurrency", 4), "batch.concurrency"),
            batch_completion_window_seconds=_positive(batch_pick(
                "SWITCHYARD_BATCH_COMPLETION_WINDOW_SECONDS", "completion_window_seconds", 24 * 3600),
                "batch.completion_window_seconds"),
            batch_lease_seconds=_positive(batch_pick("SWITCHYARD_BATCH_LEASE_SECONDS", "lease_seconds", 30),
                                          "batch.lease_seconds"),
            timeouts=timeouts,
            limits=_section(file.get("limits"), ServerLimits, "limits"),
            fetch=_section(file.get("fetch"), FetchPolicy, "fetch"),
            max_reserve_tokens=_optional_positive((file.get("billing") or {}).get("max_reserve_tokens"),
                                                  "billing.max_reserve_tokens"),
            redis_max_connections=_positive((file.get("redis") or {}).get("max_connections", 256), "redis.max_connections"),
            redis_pool_timeout=float((file.get("redis") or {}).get("pool_timeout", 10.0)),
            hold_lease_seconds=_positive_seconds((file.get("redis") or {}).get("hold_lease_seconds", 10.0),
                                                 "redis.hold_lease_seconds"),
            settle_retry_seconds=_positive_seconds(store.get("settle_retry_seconds", 20.0),
                                                   "store.settle_retry_seconds"),
            console=_console(file.get("console")),
            referral=_referral(file.get("referral")),
            price_groups=_price_groups(file.get("price_groups")),
            credits=_section(file.get("credits"), CreditSettings, "credits"),
            usage=_usage(file.get("usage")),
            budgets=_budgets(file.get("budgets")),
            alerts=_section(file.get("alerts"), AlertSettings, "alerts"),
            metrics_token=env.get("SWITCHYARD_METRICS_TOKEN") or (file.get("metrics") or {}).get("token"),
            metrics_enabled=(file.get("metrics") or {}).get("enabled", True) is not False,
            log_format=_log_format(str(pick("SWITCHYARD_LOG_FORMAT", "log_format", "plain"))),
            otlp_endpoint=(env.get("SWITCHYARD_OTLP_ENDPOINT") or (file.get("tracing") or {}).get("otlp_endpoint")
                           or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None),
            trace_service_name=str((file.get("tracing") or {}).get("service_name")
                                   or env.get("OTEL_SERVICE_NAME") or "switchyard"),
            trace_sample_ratio=_ratio(env.get("SWITCHYARD_TRACE_SAMPLE_RATIO")
                                      or (file.get("tracing") or {}).get("sample_ratio", 0.02)),
            drain_seconds=_positive_seconds(pick("SWITCHYARD_DRAIN_SECONDS", "drain_seconds", 30.0), "drain_seconds"),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid server setting: {exc}") from None
