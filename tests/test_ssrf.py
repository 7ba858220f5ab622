"""The SSRF guard: schemes, address classes, the allow-list, and the resolver in the connector.

No test here connects anywhere but 127.0.0.1: refusals happen before any connection, and public
addresses are only classified or pre-checked (a literal IP resolves without the network).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from research_service.errors import ConfigError
from research_service.reading import PageReader, PageRefused, open_reader
from research_service.reading.addresses import AllowList, non_public_reason
from research_service.reading.fetch import FetchLimits
from research_service.reading.ssrf import GuardedResolver, UrlGuard
from research_service.settings import Settings
from tests.loopback_web import LoopbackWeb

BUDGET = 1000


@pytest.fixture
async def web() -> AsyncIterator[LoopbackWeb]:
    async with LoopbackWeb() as loopback:
        yield loopback


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[PageReader]:
    """A reader with the default (empty) allow-list."""
    async with open_reader(Settings(data_dir=tmp_path, fetch_timeout_s=2.0)) as page_reader:
        yield page_reader


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("fc00::1", "private"),
        ("fec0::1", "site-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("198.18.0.1", "private"),
        ("2001:db8::1", "private"),
        ("::ffff:127.0.0.1", "loopback (IPv4 inside IPv6)"),
        ("::ffff:169.254.169.254", "link-local (IPv4 inside IPv6)"),
        ("::127.0.0.1", "loopback (IPv4 inside IPv6)"),
        ("::8.8.8.8", "reserved"),
        ("64:ff9b::a00:1", "private (IPv4 inside IPv6)"),
        ("2002:a00:1::", "private (IPv4 inside IPv6)"),
    ],
)
def test_non_public_addresses_are_classified(address: str, reason: str) -> None:
    assert non_public_reason(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34", "64:ff9b::808:808"],
)
def test_public_addresses_are_accepted(address: str) -> None:
    assert non_public_reason(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("url", ["http://93.184.216.34/", "https://[2606:4700::1111]:8443/a"])
async def test_precheck_passes_public_literal_addresses(url: str) -> None:
    """Only checked, never fetched: a literal resolves without any network traffic."""
    await UrlGuard(AllowList()).check(URL(url))


def test_allow_list_parses_hosts_addresses_and_networks() -> None:
    allow = AllowList.parse(" 127.0.0.1, 10.0.0.0/8 ,Intranet.Example., fc00::/7,,")
    assert allow.hosts == frozenset({"intranet.example"})
    assert [str(net) for net in allow.networks] == ["127.0.0.1/32", "10.0.0.0/8", "fc00::/7"]
    assert allow.allows_host("INTRANET.example.")
    assert allow.refusal(ipaddress.ip_address("10.9.8.7")) is None
    assert allow.refusal(ipaddress.ip_address("192.168.0.1")) == "private"


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "intranet/8", "300.1.1.1/32"])
def test_allow_list_rejects_malformed_networks(entry: str) -> None:
    with pytest.raises(ConfigError, match="--fetch-allow"):
        AllowList.parse(entry)


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/pub/",
        "gopher://127.0.0.1:70/_stats",
        "javascript:alert(1)",
        "data:text/html,<p>hi</p>",
    ],
)
async def test_non_http_schemes_are_refused(guarded: PageReader, url: str) -> None:
    with pytest.raises(PageRefused, match="only http and https"):
        await guarded.read(url, query="x", budget_chars=BUDGET)


@pytest.mark.parametrize(
    ("host", "said"),
    [
        ("127.0.0.1", "127.0.0.1 is a loopback address"),
        ("localhost", "localhost resolves to 127.0.0.1, a loopback address"),
        ("LocalHost", "localhost resolves to 127.0.0.1, a loopback address"),
        ("[::1]", "::1 is a loopback address"),
        ("2130706433", "2130706433 resolves to 127.0.0.1"),
        ("0x7f000001", "0x7f000001 resolves to 127.0.0.1"),
        ("0x7f.1", "resolves to 127.0.0.1"),
        ("0177.0.0.1", "resolves to 127.0.0.1"),
        ("127.1", "resolves to 127.0.0.1"),
        ("[::ffff:127.0.0.1]", "loopback (IPv4 inside IPv6)"),
        ("0.0.0.0", "unspecified"),
    ],
)
async def test_loopback_in_any_spelling_is_refused_without_the_allow_list(
    web: LoopbackWeb, guarded: PageReader, host: str, said: str
) -> None:
    with pytest.raises(PageRefused, match=re.escape(said)) as caught:
        await guarded.read(web.url("/article", host=host), query="x", budget_chars=BUDGET)
    assert "--fetch-allow" in str(caught.value)
    assert web.requests == []


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.1:8080/router", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://[fc00::1]/", "private"),
        ("http://[fe80::1]/", "link-local"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
async def test_non_public_addresses_are_refused_before_connecting(
    guarded: PageReader, url: str, said: str
) -> None:
    with pytest.raises(PageRefused, match=re.escape(f"a {said} address; add it to --fetch-allow")):
        await guarded.read(url, query="x", budget_chars=BUDGET)


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8", "localhost"])
async def test_allow_list_lifts_the_guard(web: LoopbackWeb, tmp_path: Path, allow: str) -> None:
    settings = Settings(data_dir=tmp_path, fetch_allow=allow)
    async with open_reader(settings) as reader:
        page = await reader.read(
            web.url("/article", host="localhost"), query="lens", budget_chars=BUDGET
        )
    assert page.passages


async def test_resolver_refuses_a_loopback_name() -> None:
    resolver = GuardedResolver(AllowList())
    try:
        with pytest.raises(PageRefused, match=re.escape("localhost resolves to 127.0.0.1")):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()


async def test_resolver_passes_an_allowed_name() -> None:
    resolver = GuardedResolver(AllowList.parse("localhost"))
    try:
        results = await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    assert {result["host"] for result in results} == {"127.0.0.1"}


class ScriptedResolver(AbstractResolver):
    """Answers every name with the scripted addresses, as a rebinding DNS server might."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "addresses",
    [["10.0.0.7"], ["93.184.216.34", "10.0.0.7"], ["::ffff:169.254.169.254"], ["fd00::5"]],
)
async def test_resolver_refuses_any_non_public_answer(addresses: list[str]) -> None:
    resolver = GuardedResolver(AllowList(), inner=ScriptedResolver(addresses))
    with pytest.raises(PageRefused, match=re.escape("rebind.example resolves to")):
        await resolver.resolve("rebind.example", 443)


async def test_resolver_passes_public_answers() -> None:
    resolver = GuardedResolver(AllowList(), inner=ScriptedResolver(["93.184.216.34"]))
    results = await resolver.resolve("example.com", 443)
    assert [result["host"] for result in results] == ["93.184.216.34"]


class LetEverythingThrough:
    """A guard that checks nothing: stands in for a pre-check fooled by DNS rebinding."""

    async def check(self, url: URL) -> None:
        return None


async def test_connector_refuses_when_the_precheck_is_bypassed(
    web: LoopbackWeb, guarded: PageReader
) -> None:
    """The session's own resolver refuses the connection the pre-check let through."""
    unguarded = PageReader(
        guarded.session,
        guard=LetEverythingThrough(),
        limits=FetchLimits(timeout_s=2.0, max_bytes=1 << 20, max_redirects=2),
        context_chars=BUDGET,
    )
    with pytest.raises(PageRefused, match="connecting to localhost is refused"):
        await unguarded.read(web.url("/article", host="localhost"), query="x", budget_chars=BUDGET)
    with pytest.raises(PageRefused, match="connecting to localhost is refused"):
        async with guarded.session.get(web.url("/article", host="localhost")):
            pass
    assert web.requests == []
