"""The SSRF guard: only http(s) URLs whose host resolves to public (or allowed) addresses.

Two layers: `UrlGuard.check` runs before every request (the first and each redirect hop) and
explains a refusal; `GuardedResolver` sits in the session's connector, so the connection goes
only to addresses that passed the same test even if DNS answers differently the second time
(DNS rebinding). aiohttp does not ask the resolver about IP literals; those cannot rebind, and
the pre-check has already refused the non-public ones.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from research_service.reading.addresses import AllowList, IPAddress, parse_ip
from research_service.reading.errors import PageRefused, PageUnreachable
from research_service.settings_fields import flag_name

log = logging.getLogger(__name__)

#: The longest a host's address lookup may take before the URL is refused as unreachable.
RESOLVE_TIMEOUT_S: Final = 3.0

ALLOWED_SCHEMES: Final = frozenset({"http", "https"})
ALLOW_FLAG: Final = f"--{flag_name('fetch_allow')}"


def refusal(host: str, ip: IPAddress, *, reason: str) -> str:
    """Why a host is refused and how to allow it, for a PageRefused message."""
    if parse_ip(host) == ip:
        return f"{host} is a {reason} address; add it to {ALLOW_FLAG} to read it"
    return (
        f"{host} resolves to {ip}, a {reason} address; "
        f"add {host} or {ip} to {ALLOW_FLAG} to read it"
    )


def first_refusal(host: str, addresses: Iterable[IPAddress], *, allow: AllowList) -> str | None:
    """The refusal for the first of `addresses` that is neither public nor allowed, if any."""
    for ip in addresses:
        reason = allow.refusal(ip)
        if reason is not None:
            return refusal(host, ip, reason=reason)
    return None


class UrlGuard:
    """Refuses URLs that are not http(s) or whose host is not public, before any connection."""

    def __init__(self, allow: AllowList) -> None:
        self.allow = allow

    async def check(self, url: URL) -> None:
        """Return if `url` may be fetched; raise PageRefused (or PageUnreachable) if not."""
        shown = str(url)
        if url.scheme not in ALLOWED_SCHEMES:
            raise PageRefused(
                f"{shown} is refused: only http and https pages are read, "
                f"not {url.scheme or 'scheme-less'} URLs",
                url=shown,
            )
        host = url.raw_host
        if not host:
            raise PageRefused(f"{shown} is refused: it names no host", url=shown)
        if self.allow.allows_host(host):
            return
        addresses = await self._resolve(host, port=url.port or 0, url=shown)
        reason = first_refusal(host, addresses, allow=self.allow)
        if reason is not None:
            log.debug("refused %s: %s", shown, reason)
            raise PageRefused(f"{shown} is refused: {reason}", url=shown)

    @staticmethod
    async def _resolve(host: str, *, port: int, url: str) -> list[IPAddress]:
        """Every address `host` resolves to (any family), as the system resolver answers."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise PageUnreachable(
                f"{url} could not be read: {host} does not resolve ({exc}); check the address",
                url=url,
            ) from None
        except TimeoutError:
            # A resolver that drops a query answers only after its own retry (5 s in glibc):
            # a request checking a webhook URL must not wait for that.
            raise PageUnreachable(
                f"{url} could not be read: {host} did not resolve within "
                f"{RESOLVE_TIMEOUT_S:g} s; check the address and the DNS server",
                url=url,
            ) from None
        addresses = [parse_ip(str(info[4][0])) for info in infos]
        if not addresses or any(ip is None for ip in addresses):
            raise PageRefused(f"{url} is refused: {host} resolves to no IP address", url=url)
        return [ip for ip in addresses if ip is not None]


class GuardedResolver(AbstractResolver):
    """The default resolver, raising PageRefused if a host resolves to a non-public address."""

    def __init__(self, allow: AllowList, *, inner: AbstractResolver | None = None) -> None:
        self.allow = allow
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host` and pass the answer on only if every address is public or allowed."""
        results = await self._inner.resolve(host, port, family)
        if self.allow.allows_host(host):
            return results
        addresses = [parse_ip(result["host"]) for result in results]
        if any(ip is None for ip in addresses):
            raise PageRefused(f"{host} is refused: it resolves to no IP address", url=host)
        reason = first_refusal(host, [ip for ip in addresses if ip is not None], allow=self.allow)
        if reason is not None:
            log.debug("resolver refused %s: %s", host, reason)
            raise PageRefused(f"connecting to {host} is refused: {reason}", url=host)
        return results

    async def close(self) -> None:
        """Release the inner resolver."""
        await self._inner.close()
