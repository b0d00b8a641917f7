"""The ASGI application factory (uvicorn calls `create_app` once per worker)."""

from __future__ import annotations

import asyncio
import os
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from switchyard.accounts.admin import AccountsAdmin
from switchyard.accounts.billing import Billing
from switchyard.accounts.directory import Directory
from switchyard.accounts.events import UsageEvents
from switchyard.accounts.funds import Funds
from switchyard.accounts.keys import digest, ensure_master_key
from switchyard.credits.codes import CodeBook
from switchyard.credits.referrals import Referrals, referral_policy
from switchyard.accounts.periods import Periods
from switchyard.alerts.delivery import Deliverer
from switchyard.alerts.watch import AlertWatch
from switchyard.files.links import FileLinks
from switchyard.observability import logs, tracing
from switchyard.observability.directory import ENV as METRICS_DIR, prepare_directory
from switchyard.metering.retention import Pruner
from switchyard.accounts.ledger import LedgerWriter, committed_costs
from switchyard.accounts.records import OPERATOR_ORG_ID, KeyRecord
from switchyard.accounts.shared_funds import SharedFunds
from switchyard.batch import BatchRecords, BatchRunner
from switchyard.catalog import load_catalog
from switchyard.config import Settings, load_settings
from switchyard.console import Console, People, Sessions
from switchyard.console.live import SharedUsageEvents
from switchyard.console.sessions import AttemptWindow, console_secret
from switchyard.files import FileStore
from switchyard.gateway import Gateway
from switchyard.limits import LocalRateLimiter, RateLimiter, RedisRateLimiter, load_tiers
from switchyard.responses import ResponseStore
from switchyard.routing.cache import cache_namespace, make_cache
from switchyard.routing.router import Router
from switchyard.routing.table import ModelTable
from switchyard.server.hot_routes import HotRoutes
from switchyard.server.memory import return_large_blocks
from switchyard.server.reload import Reloader
from switchyard.server.request_id import RequestIdMiddleware, printable
from switchyard.server.responses import error_response
from switchyard.server.routes import hot_routes, routes
from switchyard.server.state import AppState
from switchyard.store.database import Store, default_url
from switchyard.store.redis_client import bounded_client
from switchyard.store.redis_pipe import RedisPipe
from switchyard.wire.errors import GatewayError, server_error

log = logging.getLogger("switchyard.server")
request_log = logging.getLogger("switchyard.requests")


def _log_refusal(request: Request, err: GatewayError) -> None:
    """The request log's line for a request that got an error: who, what, why; never a secret
    or a prompt (the key's id, not the key; the error's code and param, not its message)."""
    if logs.json_lines():  # the request's one JSON line says it, when it ends
        request.scope["state"]["error_code"] = err.code
        return
    if request_log.isEnabledFor(logging.INFO):
        state = request.state
        request_log.info(
            "%s %s %s status=%d code=%s param=%s key=%s model=%s", getattr(state, "request_id", "-"),
            request.method, request.url.path, err.status, err.code or "-", err.param or "-",
            getattr(state, "key_id", None) or "-", printable(getattr(state, "model", None)),
        )


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    _log_refusal(request, exc)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err = GatewayError(404, f"Unknown request URL: {request.method} {request.url.path}.", code="unknown_url")
    elif exc.status_code == 405:
        err = GatewayError(405, f"Method {request.method} is not allowed for {request.url.path}.", code="method_not_allowed")
    else:
        err = GatewayError(exc.status_code, str(exc.detail))
    _log_refusal(request, err)
    return error_response(err)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(server_error())


def static_keys(settings: Settings, master_digest: str) -> dict[str, KeyRecord]:
    """Keys from config and the environment: they bill to the operator organisation."""

    def record(key_id: str, admin: bool) -> KeyRecord:
        return KeyRecord(id=key_id, org_id=OPERATOR_ORG_ID, name=key_id, allowed_models=None, budget_nanos=None,
                         spent_nanos=0, overdraft_nanos=0, rpm_limit=None, tpm_limit=None, expires_at=None,
                         revoked_at=None, is_admin=admin)

    keys = {digest(k): record(f"cfgkey_{digest(k)[:12]}", False) for k in settings.api_keys}
    keys[master_digest] = record("master", True)
    return keys


def build_app(settings: Settings) -> ASGIApp:
    catalog = load_catalog(overrides=settings.catalog_overrides)
    table = ModelTable(settings, catalog)
    master_digest, new_key = ensure_master_key(settings.master_key, settings.master_key_file)
    if new_key:
        print(f"switchyard: generated admin key (shown once, store it now): {new_key}", flush=True)
    tiers = load_tiers(settings.tiers)
    store = Store(settings.database_url or default_url(settings.data_dir), settings.sqlite_synchronous)
    engine = store.engine
    directory = Directory(engine, static_keys(settings, master_digest), asyncio.Lock())
    writer = LedgerWriter(store, directory, settings.settle_retry_seconds)
    events = UsageEvents()
    database_url = settings.database_url or default_url(settings.data_dir)
    # One worker keeps rate limits and money holds in memory; several share them through Redis,
    # over one bounded pool (a burst waits for a connection instead of failing).
    redis = (bounded_client(settings.redis_url, max_connections=settings.redis_max_connections,
                            pool_timeout=settings.redis_pool_timeout) if settings.redis_url else None)
    # Usage events reach consoles on every worker: through Redis when there is one.
    shared_events = SharedUsageEvents(events, redis, cache_namespace(database_url)) if redis is not None else None
    writer.listeners.append(shared_events.publish if shared_events is not None else events.publish)
    # The calls every request makes (limits, holds, their settlement) go through a lean client
    # of their own: one pipelined connection (see store/redis_pipe.py).
    pipe = RedisPipe(settings.redis_url, timeout=2.0) if settings.redis_url else None
    limiter: RateLimiter = (RedisRateLimiter(settings.redis_url, client=redis, pipe=pipe) if settings.redis_url
                            else LocalRateLimiter())
    funds: Funds | SharedFunds = (
        SharedFunds(settings.redis_url, database_url, client=redis, committed=lambda ids: committed_costs(engine, ids),
                    lease_seconds=settings.hold_lease_seconds, pipe=pipe)
        if settings.redis_url else Funds())
    periods = Periods(settings.budgets.timezone)
    billing = Billing(funds, limiter, tiers, writer, settings.default_output_estimate, settings.max_reserve_tokens,
                      settings.price_groups, periods, redis=pipe)
    cache = make_cache(settings.redis_url, cache_namespace(database_url), client=redis)
    files = FileStore(engine, settings.data_dir, settings.files_max_bytes, settings.files_batch_max_bytes)
    gateway = Gateway(table, billing, Router(), cache, responses=ResponseStore(engine), files=files,
                      limits=settings.limits)
    batches = BatchRunner(
        BatchRecords(engine), files, gateway, directory, concurrency=settings.batch_concurrency,
        lease_seconds=settings.batch_lease_seconds, known_model=lambda name: name in dict(table.names()),
    )
    referrals = Referrals(referral_policy(settings.referral))

    def new_tiers(fresh: dict[str, Any]) -> None:
        billing.tiers = fresh
        state.admin.tiers = set(fresh)
        state.admin.served = frozenset(name for name, _ in table.names())

    reloader = Reloader(table, gateway.router, new_tiers)
    directory.on_config = reloader.reload_quietly
    state = AppState(
        files=files, batches=batches,
        settings=settings, directory=directory, events=events,
        admin=AccountsAdmin(engine, tiers, funds, served=[name for name, _ in table.names()], referrals=referrals,
                            price_groups=settings.price_groups, periods=periods),
        table=table, gateway=gateway,
        console=Console(settings.console, People(engine),
                        Sessions(engine, console_secret(settings.data_dir), settings.console.session_hours),
                        AttemptWindow(limit=30, seconds=300)),
        # Signed with the admin key's digest: every replica that shares the key honours the links.
        links=FileLinks(master_digest.encode()),
        codes=CodeBook(engine, referrals, funds), redis=redis, reloader=reloader,
    )

    deliverer = Deliverer(engine, settings.alerts, settings.fetch)
    router = gateway.router

    def breakers() -> list[tuple[str, str, bool]]:
        """(deployment, model, breaker open?) as this worker's router sees them."""
        return [(dep.id, dep.public_name, router.health_of(dep).breaker_open) for dep in table.deployments()]

    watch = AlertWatch(engine, directory, periods, settings.alerts, deliverer, breakers)
    writer.listeners.append(watch.on_settled)
    gauges: Any = None
    if settings.metrics_enabled:
        if not os.environ.get(METRICS_DIR):  # `serve` sets it for its workers; a bare app, here
            prepare_directory()
        # Imported only now: prometheus-client picks multiprocess mode at import, from the directory.
        from switchyard.observability.metrics import GaugeSampler, Metrics

        metrics = Metrics()
        writer.listeners.append(metrics.on_settled)
        writer.on_commit = metrics.timed_commit
        gauges = GaugeSampler(metrics, lambda: [(dep.id, router.health_of(dep).in_flight,
                                                 router.health_of(dep).breaker_open) for dep in table.deployments()],
                              lambda: batches.lines_queued)
    retention = settings.usage
    pruner = Pruner(engine, retention.retention_days, retention.prune_batch) if retention.retention_days else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tracing.configure(settings.otlp_endpoint, settings.trace_service_name, settings.trace_sample_ratio)
        await directory.load()
        directory.start_polling()
        writer.start()
        await funds.start()
        await table.start()
        if shared_events is not None:
            shared_events.start()
        if pruner is not None:
            pruner.start()
        watch.start()
        deliverer.start()
        if gauges is not None:
            gauges.start()
        batches.start()  # last: batch lines need everything above
        # What start-up built lives as long as the worker: keep it out of every later full
        # garbage collection, which would otherwise walk it each time (a pause per big request).
        gc.freeze()
        loop = asyncio.get_running_loop()
        # SIGHUP (from `serve`'s supervisor, or `kill -HUP` on a single worker) reloads the config.
        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reloader.reload_quietly()))
        try:
            yield
        finally:
            # uvicorn ends the process by raising the signal it caught again: no atexit, so
            # from here on every line goes out as it is logged.
            logs.write_at_once()
            loop.remove_signal_handler(signal.SIGHUP)
            await reloader.close()
            await batches.stop()  # first: lines in flight still settle through the ledger writer
            if pruner is not None:
                await pruner.close()
            await watch.close()
            await deliverer.close()
            if gauges is not None:
                await gauges.close()
            await writer.close()
            if shared_events is not None:
                await shared_events.close()
            await directory.close()
            await table.close()
            if pipe is not None:
                await pipe.drain()  # settlement's last releases reach Redis before the lease goes
            await limiter.close()
            await funds.close()
            await cache.close()
            if redis is not None:
                await redis.aclose()
            if pipe is not None:
                await pipe.close()
            await store.close()
            tracing.shutdown()

    handlers = {GatewayError: _gateway_error, HTTPException: _http_error, Exception: _unexpected_error}
    app = Starlette(routes=routes(), exception_handlers=handlers, lifespan=lifespan)  # type: ignore[arg-type]
    state.gauges = gauges
    app.state.sy = state
    # Outermost, so even the 500s Starlette renders itself carry the request id.
    return RequestIdMiddleware(HotRoutes(app, hot_routes(), handlers))  # type: ignore[arg-type]


def create_app() -> ASGIApp:
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    return_large_blocks()  # in each worker: it is that process's heap
    return build_app(settings)
