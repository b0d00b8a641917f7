"""The model table: public names and aliases mapped to live deployments."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from switchyard.catalog import Catalog, ModelSpec
from switchyard.config import ConfigError, DeploymentConfig, Settings
from switchyard.providers import Provider, provider_class
from switchyard.routing.smart import SmartRouter
from switchyard.wire.errors import model_not_found

log = logging.getLogger("switchyard.routing")


@dataclass(slots=True)
class Deployment:
    public_name: str
    config: DeploymentConfig
    spec: ModelSpec
    provider: Provider

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def context_window(self) -> int:
        return self.provider.context_window

    @property
    def max_output_tokens(self) -> int:
        return self.provider.max_output_tokens

    @property
    def default_output_limit(self) -> int | None:
        return self.provider.default_output_limit


class ModelTable:
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self._groups: dict[str, list[Deployment]] = {}
        for public, configs in settings.models.items():
            group = []
            for cfg in configs:
                spec = catalog.get(cfg.catalog)
                if spec is None:
                    raise ConfigError(
                        f"deployment {cfg.id}: no catalog entry '{cfg.catalog}' (add it under 'catalog:' "
                        "in the config so its prices and limits are known)"
                    )
                try:
                    cls = provider_class(cfg.provider)
                except ValueError as exc:
                    raise ConfigError(f"deployment {cfg.id}: {exc}") from None
                group.append(Deployment(public, cfg, spec, cls(cfg, spec)))
            self._groups[public] = group
        self._aliases = dict(settings.aliases)
        self._strategies = dict(settings.strategies)
        self.smart = SmartRouter.from_config(settings.smart_routing, set(self._groups) | set(self._aliases))

    def strategy(self, public: str) -> str:
        return self._strategies.get(public, "priority")

    def resolve(self, name: str) -> tuple[str, list[Deployment]]:
        """The canonical public name and its deployments; 404 `model_not_found` otherwise."""
        public = self._aliases.get(name, name)
        group = self._groups.get(public)
        if not group:
            raise model_not_found(name)
        return public, group

    def names(self) -> list[tuple[str, ModelSpec]]:
        """Every name a client may use (public names, then aliases) with the spec it serves."""
        out = [(name, group[0].spec) for name, group in self._groups.items()]
        out += [(alias, self._groups[target][0].spec) for alias, target in self._aliases.items()]
        if self.smart is not None:
            out.append((self.smart.name, self.resolve(self.smart.default)[1][0].spec))
        return out

    def deployments(self) -> list[Deployment]:
        return [d for group in self._groups.values() for d in group]

    def same_deployments(self, fresh: ModelTable) -> set[str]:
        """Ids of deployments `fresh` has exactly as this table has them (config and catalog entry)."""
        mine = {d.id: d for d in self.deployments()}
        return {d.id for d in fresh.deployments()
                if d.id in mine and mine[d.id].config == d.config and mine[d.id].spec == d.spec
                and mine[d.id].public_name == d.public_name}

    def adopt(self, fresh: ModelTable, kept: set[str]) -> list[Deployment]:
        """Serve what `fresh` serves from now on, keeping this table's deployments in `kept` (their
        providers stay as they are); returns the deployments no longer served. No await: a request
        resolves against the old table or the new one, never a mix."""
        mine = {d.id: d for d in self.deployments()}
        groups = {public: [mine[d.id] if d.id in kept else d for d in group] for public, group in fresh._groups.items()}
        retired = [d for d in mine.values() if d.id not in kept]
        self._groups, self._aliases, self._strategies, self.smart = groups, fresh._aliases, fresh._strategies, fresh.smart
        return retired

    async def start(self) -> None:
        for dep in self.deployments():
            await dep.provider.start()
            log.info("deployment %s ready: %s via %s", dep.id, dep.public_name, dep.config.provider)

    async def close(self) -> None:
        for dep in self.deployments():
            try:
                await dep.provider.close()
            except Exception:  # closing must never hide the shutdown of the others
                log.exception("closing deployment %s failed", dep.id)
