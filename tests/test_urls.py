"""canonical_url: one spelling per page, and no merging of pages that differ."""

from __future__ import annotations

import pytest

from research_service.providers.urls import canonical_url

SAME = [
    # scheme and host case
    ("HTTPS://Example.COM/Path", "https://example.com/Path"),
    ("http://EXAMPLE.org./a", "http://example.org/a"),
    # default ports dropped, others kept
    ("http://example.com:80/a", "http://example.com/a"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("https://example.com:8443/a", "https://example.com:8443/a"),
    ("http://example.com:443/a", "http://example.com:443/a"),
    ("https://example.com:/a", "https://example.com/a"),
    # fragments dropped
    ("https://example.com/a#section-2", "https://example.com/a"),
    ("https://example.com/a?x=1#", "https://example.com/a?x=1"),
    # trailing slash: /a/ and /a alike, the root kept
    ("https://example.com/a/", "https://example.com/a"),
    ("https://example.com/a//", "https://example.com/a"),
    ("https://example.com", "https://example.com/"),
    ("https://example.com/", "https://example.com/"),
    ("https://example.com/?q=1", "https://example.com/?q=1"),
    ("https://example.com/a/?q=1", "https://example.com/a?q=1"),
    # tracking parameters dropped, whatever their case
    ("https://example.com/a?utm_source=x&utm_medium=y", "https://example.com/a"),
    ("https://example.com/a?UTM_Campaign=x&id=3", "https://example.com/a?id=3"),
    ("https://example.com/a?gclid=1&fbclid=2&msclkid=3", "https://example.com/a"),
    ("https://example.com/a?mc_cid=1&mc_eid=2&id=7", "https://example.com/a?id=7"),
    ("https://example.com/a?ref=hn&ref_src=twsrc&igshid=9", "https://example.com/a"),
    ("https://example.com/a?_hsenc=1&_hsmi=2&yclid=3", "https://example.com/a"),
    ("https://example.com/a?utm%5Fsource=x&b=1", "https://example.com/a?b=1"),
    # remaining parameters sorted by name; repeated names keep their order
    ("https://example.com/s?b=2&a=1", "https://example.com/s?a=1&b=2"),
    ("https://example.com/s?tag=z&id=1&tag=a", "https://example.com/s?id=1&tag=z&tag=a"),
    ("https://example.com/s?&&b=2&", "https://example.com/s?b=2"),
    ("https://example.com/s?flag&a=1", "https://example.com/s?a=1&flag"),
    # percent-encoding: unreserved characters decoded, escapes uppercased
    ("https://example.com/%7Euser/%61bc", "https://example.com/~user/abc"),
    ("https://example.com/a%2fb", "https://example.com/a%2Fb"),
    ("https://example.com/a%2Fb", "https://example.com/a%2Fb"),
    ("https://example.com/s?q=caf%c3%a9", "https://example.com/s?q=caf%C3%A9"),
    ("https://example.com/wiki/Caf\u00e9", "https://example.com/wiki/Caf%C3%A9"),
    ("https://example.com/a b", "https://example.com/a%20b"),
    ("https://example.com/100%", "https://example.com/100%25"),
    # dot segments resolved
    ("https://example.com/a/./b/../c", "https://example.com/a/c"),
    ("https://example.com/a/b/..", "https://example.com/a"),
    ("https://example.com/../a", "https://example.com/a"),
    # internationalised host names become their ASCII (punycode) form
    ("https://B\u00fccher.example/x", "https://xn--bcher-kva.example/x"),
    # IPv6 literals keep their brackets; userinfo is kept
    ("http://[2001:DB8::1]:80/a/", "http://[2001:db8::1]/a"),
    ("https://user:pw@Example.com/a", "https://user:pw@example.com/a"),
    # surrounding white space ignored
    ("  https://example.com/a  ", "https://example.com/a"),
    # file URLs from the local corpus survive
    ("FILE:///home/me/notes/a.md", "file:///home/me/notes/a.md"),
]


@pytest.mark.parametrize(("url", "expected"), SAME)
def test_canonical_form(url: str, expected: str) -> None:
    assert canonical_url(url) == expected


@pytest.mark.parametrize(("url", "_"), SAME)
def test_canonical_form_is_a_fixed_point(url: str, _: str) -> None:
    once = canonical_url(url)
    assert canonical_url(once) == once


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("https://Example.com/a/?utm_source=x#top", "https://example.com/a"),
        ("https://example.com:443/a?b=2&a=1", "https://example.com/a/?a=1&b=2&gclid=z"),
        ("https://example.com/%7Ea", "https://example.com/~a"),
    ],
)
def test_spellings_of_one_page_share_a_key(first: str, second: str) -> None:
    assert canonical_url(first) == canonical_url(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # different schemes may serve different pages; merging them is not "safe"
        ("http://example.com/a", "https://example.com/a"),
        # www is a different host
        ("https://www.example.com/a", "https://example.com/a"),
        # path case matters
        ("https://example.com/A", "https://example.com/a"),
        # an encoded slash is not a slash
        ("https://example.com/a%2Fb", "https://example.com/a/b"),
        # meaningful parameters stay, values included
        ("https://example.com/s?id=1", "https://example.com/s?id=2"),
        ("https://example.com/s?id=1", "https://example.com/s"),
        # repeated parameters keep their order
        ("https://example.com/s?t=a&t=b", "https://example.com/s?t=b&t=a"),
        # a look-alike of a tracking parameter is kept
        ("https://example.com/s?reference=1", "https://example.com/s"),
        ("https://example.com/s?utm=1", "https://example.com/s"),
        # non-default port
        ("https://example.com:8443/", "https://example.com/"),
    ],
)
def test_different_pages_keep_different_keys(first: str, second: str) -> None:
    assert canonical_url(first) != canonical_url(second)


@pytest.mark.parametrize(
    "url",
    ["http://example.com:99999/a", "http://[::1/a", "http://example.com:port/"],
)
def test_unparseable_urls_come_back_as_given(url: str) -> None:
    assert canonical_url(url) == url


@pytest.mark.parametrize("url", ["", "not a url", "mailto:Someone@Example.com", "/relative/"])
def test_never_raises(url: str) -> None:
    assert isinstance(canonical_url(url), str)
