"""Which IP addresses are public, and the operator's allow-list of hosts and networks."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final

from research_service.errors import ConfigError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Shared address space for carrier-grade NAT (RFC 6598): not global, but not "private" either.
CARRIER_GRADE_NAT: Final = ipaddress.IPv4Network("100.64.0.0/10")
# NAT64 well-known prefix (RFC 6052): marked global, yet it carries an IPv4 address that a
# NAT64 gateway would connect to, so that embedded address is what must be public.
NAT64_PREFIX: Final = ipaddress.IPv6Network("64:ff9b::/96")
# IPv4-compatible IPv6 (RFC 4291, deprecated): `::a.b.c.d`, which `ipaddress` calls global.
IPV4_COMPATIBLE: Final = ipaddress.IPv6Network("::/96")
IPV4_BITS: Final = 0xFFFFFFFF


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in IPV4_COMPATIBLE or ip in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(ip) & IPV4_BITS)
    return None


def non_public_reason(ip: IPAddress) -> str | None:
    """Why `ip` is not a public unicast address ("loopback", "private", …), or None if it is."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            # The connection ends up at the IPv4 address, so that is what must be public;
            # a deprecated IPv4-compatible address is refused whatever it carries.
            reason = non_public_reason(inner)
            if reason is not None:
                return f"{reason} (IPv4 inside IPv6)"
            return "reserved" if ip in IPV4_COMPATIBLE else None
    checks = (
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in CARRIER_GRADE_NAT, "carrier-grade NAT"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
        (not ip.is_global, "non-public"),
    )
    return next((reason for failed, reason in checks if failed), None)


def parse_ip(text: str) -> IPAddress | None:
    """`text` as an IP address (an IPv6 zone such as `%eth0` kept), or None if it is not one."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def normalize_host(host: str) -> str:
    """A hostname as the allow-list compares it: lowercase, without a trailing dot."""
    return host.strip().rstrip(".").lower()


@dataclass(frozen=True, slots=True)
class AllowList:
    """Hosts and networks the operator lets page reading reach although they are not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> AllowList:
        """An allow-list from `fetch_allow`: comma-separated hostnames, IPs and CIDR networks."""
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in spec.split(","):
            entry = raw.strip()
            if not entry:
                continue
            if "/" not in entry and parse_ip(entry) is None:
                hosts.add(normalize_host(entry))
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ConfigError(
                    f"{entry!r} in fetch_allow is not a valid address or network; "
                    "write one such as 10.0.0.0/8, or fix --fetch-allow"
                ) from None
        return cls(hosts=frozenset(hosts), networks=tuple(networks))

    def allows_host(self, host: str) -> bool:
        """Whether `host` (as written in a URL) is allowed by name."""
        return normalize_host(host) in self.hosts

    def allows_address(self, ip: IPAddress) -> bool:
        """Whether `ip` lies in an allowed network."""
        return any(ip.version == net.version and ip in net for net in self.networks)

    def refusal(self, ip: IPAddress) -> str | None:
        """Why connecting to `ip` is refused, or None if it is public or allowed."""
        if self.allows_address(ip):
            return None
        return non_public_reason(ip)
