"""PageReader over a real loopback web: extraction, passages, redirects, and every limit."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from research_service.corpus.files import html_text
from research_service.reading import (
    PageEmpty,
    PageHTTPError,
    PageNotText,
    PageReader,
    PageRefused,
    PageTimeout,
    PageTooLarge,
    PageTooManyRedirects,
    open_reader,
)
from research_service.reading import extract as extract_module
from research_service.reading.charset import decode
from research_service.reading.fetch import RawPage
from research_service.settings import Settings
from tests.loopback_web import (
    ARTICLE_PARAGRAPHS,
    ARTICLE_TITLE,
    BOILERPLATE,
    LATIN_TEXT,
    LATIN_TITLE,
    LoopbackWeb,
    article_html,
)

MAX_BYTES = 64 * 1024
MAX_REDIRECTS = 3
TIMEOUT_S = 0.3
CONTEXT_CHARS = 3000
BUDGET = 2000
LENS_PARAGRAPH = ARTICLE_PARAGRAPHS[2]


@pytest.fixture
async def web() -> AsyncIterator[LoopbackWeb]:
    async with LoopbackWeb() as loopback:
        yield loopback


@pytest.fixture
async def reader(tmp_path: Path) -> AsyncIterator[PageReader]:
    """A reader allowed to reach the loopback web, with small limits."""
    settings = Settings(
        data_dir=tmp_path,
        fetch_allow="127.0.0.1",
        fetch_max_bytes=MAX_BYTES,
        fetch_max_redirects=MAX_REDIRECTS,
        fetch_timeout_s=TIMEOUT_S,
        context_chars=CONTEXT_CHARS,
    )
    async with open_reader(settings) as page_reader:
        yield page_reader


async def test_article_yields_main_text_without_boilerplate(
    web: LoopbackWeb, reader: PageReader
) -> None:
    page = await reader.read(
        web.url("/article"), query="lighthouse keepers", budget_chars=CONTEXT_CHARS
    )
    text = "\n".join(page.passages)
    assert page.title == ARTICLE_TITLE
    assert page.url == page.final_url == web.url("/article")
    for paragraph in ARTICLE_PARAGRAPHS:
        assert paragraph in text
    for junk in BOILERPLATE:
        assert junk not in text


async def test_passages_are_the_ones_matching_the_query(
    web: LoopbackWeb, reader: PageReader
) -> None:
    page = await reader.read(
        web.url("/article"), query="How does the Fresnel lens work?", budget_chars=300
    )
    assert page.passages == [LENS_PARAGRAPH]


async def test_passages_stay_within_the_page_budget(web: LoopbackWeb, reader: PageReader) -> None:
    for budget in (150, 400, 900):
        page = await reader.read(web.url("/article"), query="tower keepers", budget_chars=budget)
        assert page.passages
        assert sum(map(len, page.passages)) <= budget


async def test_page_budget_is_capped_by_context_chars(web: LoopbackWeb, reader: PageReader) -> None:
    page = await reader.read(web.url("/article"), query="the", budget_chars=10 * CONTEXT_CHARS)
    assert 0 < sum(map(len, page.passages)) <= CONTEXT_CHARS


async def test_no_matching_term_gives_the_opening_passage(
    web: LoopbackWeb, reader: PageReader
) -> None:
    page = await reader.read(web.url("/article"), query="zebra", budget_chars=400)
    assert page.passages
    assert page.passages[0].startswith(ARTICLE_TITLE)


async def test_redirect_chain_is_followed_to_the_article(
    web: LoopbackWeb, reader: PageReader
) -> None:
    start = web.url(f"/redirect/{MAX_REDIRECTS}")
    page = await reader.read(start, query="lens", budget_chars=BUDGET)
    assert (page.url, page.final_url) == (start, web.url("/article"))
    assert page.title == ARTICLE_TITLE
    assert web.requests == ["/redirect/3", "/redirect/2", "/redirect/1", "/article"]


async def test_too_long_redirect_chain_is_refused(web: LoopbackWeb, reader: PageReader) -> None:
    with pytest.raises(PageTooManyRedirects, match="--fetch-max-redirects") as caught:
        await reader.read(web.url("/redirect/9"), query="lens", budget_chars=BUDGET)
    assert caught.value.code == "page_too_many_redirects"
    assert len(web.requests) == MAX_REDIRECTS + 1
    assert "/article" not in web.requests


async def test_redirect_without_location_is_an_http_error(
    web: LoopbackWeb, reader: PageReader
) -> None:
    with pytest.raises(PageHTTPError, match="without a Location") as caught:
        await reader.read(web.url("/to/nowhere"), query="x", budget_chars=BUDGET)
    assert caught.value.status == 302


async def test_streamed_huge_page_is_refused_and_the_transfer_stopped(
    web: LoopbackWeb, reader: PageReader
) -> None:
    with pytest.raises(PageTooLarge, match="--fetch-max-bytes") as caught:
        await reader.read(web.url("/huge"), query="lighthouse", budget_chars=BUDGET)
    assert caught.value.code == "page_too_large"
    async with asyncio.timeout(5):
        await web.huge_finished.wait()
    assert web.huge_sent < web.huge_bytes  # the reader hung up instead of draining it


async def test_declared_huge_page_is_refused(web: LoopbackWeb, reader: PageReader) -> None:
    with pytest.raises(PageTooLarge):
        await reader.read(web.url("/huge-declared"), query="lighthouse", budget_chars=BUDGET)


@pytest.mark.parametrize("path", ["/slow", "/slow-body"])
async def test_slow_page_times_out(web: LoopbackWeb, reader: PageReader, path: str) -> None:
    with pytest.raises(PageTimeout, match="--fetch-timeout-s") as caught:
        await reader.read(web.url(path), query="keepers", budget_chars=BUDGET)
    assert caught.value.timeout_s == TIMEOUT_S
    assert not web.hold.is_set()


@pytest.mark.parametrize(
    ("path", "content_type"), [("/paper.pdf", "application/pdf"), ("/logo.png", "image/png")]
)
async def test_non_text_response_is_refused(
    web: LoopbackWeb, reader: PageReader, path: str, content_type: str
) -> None:
    with pytest.raises(PageNotText, match=content_type) as caught:
        await reader.read(web.url(path), query="x", budget_chars=BUDGET)
    assert caught.value.content_type == content_type
    assert caught.value.code == "page_not_text"


async def test_missing_page_is_an_http_error(web: LoopbackWeb, reader: PageReader) -> None:
    with pytest.raises(PageHTTPError, match="404") as caught:
        await reader.read(web.url("/missing"), query="x", budget_chars=BUDGET)
    assert caught.value.status == 404
    assert caught.value.code == "page_http_error"


async def test_page_with_only_boilerplate_is_empty(web: LoopbackWeb, reader: PageReader) -> None:
    with pytest.raises(PageEmpty):
        await reader.read(web.url("/boilerplate-only"), query="home", budget_chars=BUDGET)


async def test_plain_text_is_decoded_by_its_declared_charset(
    web: LoopbackWeb, reader: PageReader
) -> None:
    page = await reader.read(web.url("/plain"), query="café", budget_chars=BUDGET)
    assert page.title == "Notes on the café at Hynish"
    assert "crème brûlée" in "\n".join(page.passages)


async def test_a_charset_no_page_has_is_not_used(web: LoopbackWeb, reader: PageReader) -> None:
    """`charset=punycode` and 2 MB once kept a thread busy for minutes (its decoding is
    quadratic): it counts as no charset, and the page is read as UTF-8."""
    page = await reader.read(web.url("/punycode"), query="lighthouse", budget_chars=BUDGET)
    article = await reader.read(web.url("/article"), query="lighthouse", budget_chars=BUDGET)
    assert (page.title, page.passages) == (article.title, article.passages)
    body = article_html().encode() + b"-" + b"a" * 20_000
    for declared in ("punycode", "idna"):
        assert decode(body, declared=declared, html=True) == body.decode()


def test_a_page_of_too_many_tags_is_read_in_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """trafilatura takes time that grows with the square of some layouts' tags (one table
    row of 200,000 cells: 261 s); past the limit, the visible text is read in one pass."""
    monkeypatch.setattr(extract_module, "MAX_EXTRACTED_TAGS", 10)
    html = article_html()
    raw = RawPage("http://x/", "http://x/", "text/html", "utf-8", html.encode())
    extracted = extract_module.extract(raw)
    title, text = html_text(html)
    assert (extracted.title, extracted.text) == (title, extract_module._paragraphs(text))


async def test_html_is_decoded_by_its_meta_charset(web: LoopbackWeb, reader: PageReader) -> None:
    page = await reader.read(web.url("/latin"), query="façade", budget_chars=BUDGET)
    assert page.title == LATIN_TITLE
    assert page.passages == [LATIN_TEXT]


@pytest.mark.parametrize(
    ("target", "said"),
    [
        ("metadata", "169.254.169.254 is a link-local address"),
        ("private", "10.0.0.1 is a private address"),
        ("ipv6-loopback", "::1 is a loopback address"),
        ("file", "only http and https"),
        ("ftp", "only http and https"),
    ],
)
async def test_redirect_to_a_forbidden_target_is_refused(
    web: LoopbackWeb, reader: PageReader, target: str, said: str
) -> None:
    """The hop is refused by the guard before any connection (no request beyond the first)."""
    with pytest.raises(PageRefused, match=re.escape(said)) as caught:
        await reader.read(web.url(f"/to/{target}"), query="x", budget_chars=BUDGET)
    assert str(caught.value).startswith(f"{web.url(f'/to/{target}')} redirected: ")
    assert caught.value.code == "page_refused"
    assert web.requests == [f"/to/{target}"]
