"""RPM/TPM rate limiting: tiers, the limiter interface, in-process and Redis implementations."""

from switchyard.limits.limiter import Admission, LocalRateLimiter, RateLimiter, Scope, format_reset
from switchyard.limits.redis_limiter import RedisRateLimiter
from switchyard.limits.tiers import Limits, Tier, load_tiers

__all__ = [
    "Admission",
    "Limits",
    "LocalRateLimiter",
    "RateLimiter",
    "RedisRateLimiter",
    "Scope",
    "Tier",
    "format_reset",
    "load_tiers",
]
