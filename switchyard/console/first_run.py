"""The console's first start: with no operator yet, a one-time link that creates one."""

from __future__ import annotations

from switchyard.config import Settings
from switchyard.console.people import People
from switchyard.store.database import default_url, make_engine


async def new_setup_token(people: People, hours: float) -> str | None:
    """A fresh set-up token (any earlier unused one stops working), or None once an operator exists."""
    if await people.operator_exists():
        return None
    token, _ = await people.invite(None, "operator", None, None, hours)
    return token


async def setup_link_token(settings: Settings) -> str | None:
    engine = make_engine(settings.database_url or default_url(settings.data_dir), settings.sqlite_synchronous)
    try:
        return await new_setup_token(People(engine), settings.console.setup_link_hours)
    finally:
        await engine.dispose()


def console_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}/console"
