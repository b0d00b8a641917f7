"""What the router knows about each deployment right now: load, speed, and whether it is failing.

A circuit breaker per deployment: after `failure_threshold` consecutive failures it opens for
`cooldown` seconds (the deployment is skipped while others can serve), then lets one probe
through; a success closes it, a failure opens it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(slots=True)
class DeploymentHealth:
    failure_threshold: int = 5
    cooldown: float = 30.0
    in_flight: int = 0
    ttft_ewma: float | None = None  # seconds to first byte (streams) or to the answer
    consecutive_failures: int = 0
    open_until: float = 0.0
    probing: bool = False
    clock: object = field(default=time.monotonic, repr=False)

    @property
    def breaker_open(self) -> bool:
        """Open or half-open: the last `failure_threshold` attempts all failed."""
        return self.consecutive_failures >= self.failure_threshold

    def allows(self) -> bool:
        """Closed, or open with its cool-down over and no probe in flight (half-open)."""
        if self.consecutive_failures < self.failure_threshold:
            return True
        return self.clock() >= self.open_until and not self.probing  # type: ignore[operator]

    def start(self) -> None:
        self.in_flight += 1
        if self.consecutive_failures >= self.failure_threshold:
            self.probing = True

    def succeeded(self, seconds: float) -> None:
        self.in_flight -= 1
        self.consecutive_failures = 0
        self.probing = False
        # A moving average that forgets in about ten requests.
        self.ttft_ewma = seconds if self.ttft_ewma is None else 0.8 * self.ttft_ewma + 0.2 * seconds

    def failed(self) -> None:
        self.in_flight -= 1
        self.consecutive_failures += 1
        self.probing = False
        if self.consecutive_failures >= self.failure_threshold:
            self.open_until = self.clock() + self.cooldown  # type: ignore[operator]

    def ended_without_verdict(self) -> None:
        """The attempt ended for a reason that says nothing about the deployment (e.g. a 400)."""
        self.in_flight -= 1
        self.probing = False
