"""Outbound GETs of client-named URLs that cannot be turned against the gateway's own network.

- Only http and https.
- A host name is resolved by our resolver, which keeps only public addresses (not loopback,
  private, link-local, multicast, unspecified, reserved, shared, IPv4-mapped or -translated
  IPv6), and aiohttp connects to exactly those: no second lookup can swap in another address.
- A literal IP address is checked the same way before anything is sent.
- Redirects are followed by hand, at most `MAX_REDIRECTS`, each hop checked like the first.
- Operators may exempt listed hosts (`fetch.allow_hosts`, exact or `.suffix`) and networks
  (`fetch.allow_networks`), e.g. an internal image server.

A refusal is `FetchRefused`, which callers turn into one generic client error: nobody learns
from it whether a port is open or what answered.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from switchyard.config import FetchPolicy

log = logging.getLogger("switchyard.fetch")

MAX_REDIRECTS = 3
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# Beyond what `is_global` already excludes: ranges that lead back to IPv4 (so to private v4 space).
_TRANSLATED = tuple(ipaddress.ip_network(n) for n in ("::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16"))


class FetchRefused(Exception):
    """The URL may not be fetched (scheme, address, redirect) or the fetch failed; the message is
    for the operator's log, not for the client."""


def address_allowed(ip: IPAddress, policy: FetchPolicy) -> bool:
    """Public unicast addresses only, unless an operator listed the network."""
    for net in policy.allow_networks:
        if ip in ipaddress.ip_network(net, strict=False):
            return True
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in n for n in _TRANSLATED):
        return False
    return ip.is_global and not ip.is_multicast


def host_allowed(host: str, policy: FetchPolicy) -> bool:
    """An operator-listed host name: exact, or a `.suffix` entry."""
    host = host.lower().rstrip(".")
    for entry in policy.allow_hosts:
        entry = entry.lower().rstrip(".")
        if host == entry or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


class _PublicOnlyResolver(AbstractResolver):
    """Resolves with the system resolver, then keeps only the addresses the policy allows."""

    def __init__(self, policy: FetchPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if host_allowed(host, self._policy):
            return results
        kept = [r for r in results if address_allowed(ipaddress.ip_address(r["host"]), self._policy)]
        if not kept:
            raise OSError(f"{host} resolves only to addresses that may not be fetched")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def check_url(url: str, policy: FetchPolicy) -> None:
    """Scheme and, for a literal IP host, the address; names are checked when resolved."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise FetchRefused(f"scheme {parts.scheme or '(none)'!r} is not fetched")
    host = parts.hostname
    if not host:
        raise FetchRefused("the URL has no host")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return  # a name (or a form like 2130706433 or 127.1): our resolver checks what it resolves to
    if not address_allowed(ip, policy) and not host_allowed(host, policy):
        raise FetchRefused(f"address {ip} may not be fetched")


class GuardedSession:
    """An aiohttp session whose every connection goes to an allowed address."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        connector = aiohttp.TCPConnector(resolver=_PublicOnlyResolver(policy), limit=16, ttl_dns_cache=None,
                                         use_dns_cache=False)
        # No proxy from the environment: a proxy would do the connecting, past our address check.
        self._session = aiohttp.ClientSession(connector=connector, trust_env=False)

    async def __aenter__(self) -> GuardedSession:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float = 10.0) -> int:
        """POST `body` to `url` (a webhook) and return the status; redirects are not followed."""
        check_url(url, self.policy)
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                await resp.read()
                return resp.status
        except aiohttp.ClientConnectorError as exc:
            raise FetchRefused(f"could not connect: {exc.os_error or exc}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise FetchRefused(f"request failed: {type(exc).__name__}") from None

    @asynccontextmanager
    async def get(self, url: str, headers: dict[str, str]) -> AsyncIterator[aiohttp.ClientResponse]:
        """GET `url`, following redirects by hand; every hop's URL and address are checked."""
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, self.policy)
            try:
                resp = await self._session.get(url, headers=headers, allow_redirects=False)
            except aiohttp.ClientConnectorError as exc:
                raise FetchRefused(f"could not connect: {exc.os_error or exc}") from None
            except aiohttp.ClientError as exc:
                raise FetchRefused(f"request failed: {type(exc).__name__}") from None
            if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                url = urljoin(url, resp.headers["Location"])
                resp.release()
                continue
            try:
                yield resp
            finally:
                resp.release()
            return
        raise FetchRefused(f"more than {MAX_REDIRECTS} redirects")
