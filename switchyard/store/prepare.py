"""Bring a database to a servable state: schema migrated, operator organisation present."""

from __future__ import annotations

from switchyard.accounts.admin import AccountsAdmin
from switchyard.accounts.shared_funds import SharedFunds
from switchyard.config import Settings
from switchyard.limits import load_tiers
from switchyard.store.database import default_url, make_engine, migrate


async def prepare_store(settings: Settings) -> None:
    engine = make_engine(settings.database_url or default_url(settings.data_dir), settings.sqlite_synchronous)
    try:
        await migrate(engine)
        await AccountsAdmin(engine, load_tiers(settings.tiers)).ensure_operator_org()
    finally:
        await engine.dispose()


async def reset_shared_holds(settings: Settings) -> None:
    """At `serve` start, if no worker of any replica is alive, no request is in flight: rebuild the
    shared counters from the database. Otherwise the living keep theirs (and reap the dead's)."""
    if settings.redis_url:
        funds = SharedFunds(settings.redis_url, settings.database_url or default_url(settings.data_dir))
        try:
            await funds.reset_if_idle()
        finally:
            await funds.close()
