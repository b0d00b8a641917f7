"""Reload deployments, aliases, strategies, smart routing, tiers and catalog overrides from the
config file in a running worker, without dropping a request.

The new model table is built and checked first (a bad file changes nothing and says why); its new
deployments start; then the worker's table adopts it in one step (no await between: a request
sees the old table or the new one, never half of each). A deployment whose config and catalog
entry did not change is kept as it is (its connections, its loaded local model, its breaker);
one that changed or went is closed once its requests in flight are done (at most 15 minutes on).

Triggers: SIGHUP to `switchyard serve` (its supervisor passes it to every worker), or
`POST /admin/v1/reload` (`switchyard reload --base-url ...`), which reloads the worker it reached
and writes a `config` change that every other worker of every replica follows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from switchyard.catalog import load_catalog
from switchyard.config import load_settings
from switchyard.limits import Tier, load_tiers
from switchyard.routing.router import Router
from switchyard.routing.table import Deployment, ModelTable

log = logging.getLogger("switchyard.reload")

RETIRE_AFTER_SECONDS = 900.0


class Reloader:
    def __init__(self, table: ModelTable, router: Router, on_tiers: Callable[[dict[str, Tier]], None]) -> None:
        self.table = table
        self.router = router
        self.on_tiers = on_tiers
        self._lock = asyncio.Lock()
        self._retiring: set[asyncio.Task[None]] = set()
        self._unclosed: list[Deployment] = []  # retired, still finishing their requests
        self.reloads = 0

    async def reload(self) -> dict[str, Any]:
        """Re-read the config; raises ConfigError / CatalogError (nothing changed) if it is bad."""
        async with self._lock:
            settings = load_settings()
            fresh = ModelTable(settings, load_catalog(overrides=settings.catalog_overrides))
            tiers = load_tiers(settings.tiers)
            kept = self.table.same_deployments(fresh)
            started: list[Deployment] = []
            try:
                for dep in fresh.deployments():
                    if dep.id not in kept:
                        await dep.provider.start()
                        started.append(dep)
            except BaseException:
                for dep in started:
                    await _close(dep)
                raise
            retired = self.table.adopt(fresh, kept)
            self.on_tiers(tiers)
            self.reloads += 1
            for dep in retired:
                self._unclosed.append(dep)
                task = asyncio.get_running_loop().create_task(self._retire(dep))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            summary = {"models": len(self.table.names()), "deployments": len(self.table.deployments()),
                       "started": sorted(d.id for d in started), "retired": sorted(d.id for d in retired),
                       "tiers": sorted(tiers)}
            log.info("config reloaded: %s", summary)
            return summary

    async def reload_quietly(self) -> None:
        """A reload asked for by a signal or another worker: a bad file is logged, not raised."""
        try:
            await self.reload()
        except Exception as exc:
            log.error("config not reloaded (still serving the previous one): %s", exc)

    async def _retire(self, dep: Deployment) -> None:
        deadline = time.monotonic() + RETIRE_AFTER_SECONDS
        while self.router.health_of(dep).in_flight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(1.0)
        self._unclosed = [d for d in self._unclosed if d is not dep]
        await _close(dep)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        for dep in self._unclosed:
            await _close(dep)
        self._unclosed = []


async def _close(dep: Deployment) -> None:
    try:
        await dep.provider.close()
    except Exception:  # closing one must not stop the others
        log.exception("closing retired deployment %s failed", dep.id)
