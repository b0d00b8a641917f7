"""POST /admin/v1/reload: re-read the config file (deployments, aliases, tiers, catalog overrides)
on the worker reached, then on every worker of every replica (a `config` change in the feed)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from switchyard.accounts.postings import feed
from switchyard.catalog import CatalogError
from switchyard.config import ConfigError
from switchyard.server.routes.admin import admin_only
from switchyard.server.state import AppState
from switchyard.wire.errors import invalid_request


async def reload_config(request: Request, state: AppState) -> dict[str, Any]:
    try:
        summary = await state.reloader.reload()
    except (ConfigError, CatalogError, ValueError) as exc:
        raise invalid_request(f"The config file was not reloaded (the previous one still serves): {exc}") from None
    async with state.admin.engine.begin() as conn:
        await feed(conn, "config", "reload")
    return {"object": "config.reload", **summary}


def routes() -> list[Route]:
    return [Route("/admin/v1/reload", admin_only(reload_config), methods=["POST"])]
