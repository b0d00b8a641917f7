"""Fetching URLs that clients name, without letting a client reach what the gateway can reach.

Used by anything that downloads a client-supplied URL (today: remote image headers for cost
estimates). See `guard`.
"""

from switchyard.fetch.guard import FetchRefused, GuardedSession, address_allowed

__all__ = ["FetchRefused", "GuardedSession", "address_allowed"]
