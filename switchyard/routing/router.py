"""`router.candidates`: the deployments that can serve a request, in the order to try them.

Filter first (capabilities, context window and max output, circuit breaker), then order by the
group's strategy within each priority level: cheapest (catalog price of this request's
expected tokens), latency (moving average of time to first byte), least_busy (requests in
flight), weighted (random, by weight), or priority (config order).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from switchyard.metering.cost import TokenUsage, cost_nanos
from switchyard.routing.fit import check_capabilities, check_size
from switchyard.routing.health import DeploymentHealth
from switchyard.routing.table import Deployment
from switchyard.wire.chat import ChatRequest
from switchyard.wire.errors import GatewayError


class Router:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.health: dict[str, DeploymentHealth] = {}
        self._rng = rng or random.Random()

    def health_of(self, dep: Deployment) -> DeploymentHealth:
        h = self.health.get(dep.id)
        if h is None:
            opts = dep.config.options
            h = self.health[dep.id] = DeploymentHealth(
                failure_threshold=int(opts.get("breaker_failures", 5)), cooldown=float(opts.get("breaker_cooldown", 30)))
        return h

    def candidates(
        self,
        request: ChatRequest,
        group: Sequence[Deployment],
        strategy: str,
        prompt_tokens: Callable[[Deployment], int],
        expected_output: int,
    ) -> list[Deployment]:
        """Deployments able to serve `request`, best first; raises the first one's reason if none can."""
        able: list[tuple[Deployment, int]] = []
        first_error: GatewayError | None = None
        for dep in group:
            try:
                check_capabilities(request, dep)
                tokens = prompt_tokens(dep)
                check_size(request, dep, tokens)
            except GatewayError as exc:
                first_error = first_error or exc
                continue
            able.append((dep, tokens))
        if not able:
            assert first_error is not None
            raise first_error
        healthy = [(d, t) for d, t in able if self.health_of(d).allows()]
        # With every able deployment's breaker open, trying one beats refusing outright.
        pool = healthy or able
        ordered = self._order(pool, strategy, expected_output)
        return ordered

    def _order(self, pool: list[tuple[Deployment, int]], strategy: str, expected_output: int) -> list[Deployment]:
        if strategy == "cheapest":
            def key(item: tuple[Deployment, int]) -> tuple[int, int]:
                dep, tokens = item
                usage = TokenUsage(input_tokens=tokens, output_tokens=expected_output)
                return dep.config.priority, cost_nanos(dep.spec.prices, usage)
            return [d for d, _ in sorted(pool, key=key)]
        if strategy == "latency":
            # Unmeasured deployments sort first, so each gets measured.
            return [d for d, _ in sorted(pool, key=lambda i: (i[0].config.priority, self.health_of(i[0]).ttft_ewma or 0.0))]
        if strategy == "least_busy":
            return [d for d, _ in sorted(pool, key=lambda i: (i[0].config.priority, self.health_of(i[0]).in_flight))]
        if strategy == "weighted":
            by_priority: dict[int, list[Deployment]] = {}
            for dep, _ in pool:
                by_priority.setdefault(dep.config.priority, []).append(dep)
            out: list[Deployment] = []
            for priority in sorted(by_priority):
                out += self._weighted_shuffle(by_priority[priority])
            return out
        return [d for d, _ in sorted(pool, key=lambda i: i[0].config.priority)]  # stable: config order

    def _weighted_shuffle(self, deps: list[Deployment]) -> list[Deployment]:
        """Order by repeated weighted draws without replacement (weight 0: only as a last resort)."""
        left = list(deps)
        out: list[Deployment] = []
        while left:
            weights = [max(d.config.weight, 0) for d in left]
            if sum(weights) == 0:
                out += left
                break
            pick = self._rng.choices(range(len(left)), weights=weights)[0]
            out.append(left.pop(pick))
        return out
