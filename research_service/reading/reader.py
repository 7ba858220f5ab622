"""PageReader: one shared, SSRF-guarded HTTP session that turns URLs into relevant passages."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp

from research_service import __version__
from research_service.own_thread import OwnThread
from research_service.reading.addresses import AllowList
from research_service.reading.extract import extract
from research_service.reading.extract import load as load_extractor
from research_service.reading.fetch import FetchLimits, Guard, RawPage, fetch_page
from research_service.reading.passages import best_passages
from research_service.reading.ssrf import GuardedResolver, UrlGuard
from research_service.settings import Settings

log = logging.getLogger(__name__)

USER_AGENT: Final = f"research-service/{__version__} (page reader)"
ACCEPT: Final = "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.1"
CONNECTION_LIMIT: Final = 32
CONNECTIONS_PER_HOST: Final = 4
DNS_CACHE_S: Final = 60


@dataclass(frozen=True, slots=True)
class PageText:
    """What a page contributes to an answer: its title and its best passages, in page order."""

    url: str
    final_url: str
    title: str
    passages: list[str]


class Reader(Protocol):
    """Reads a web page into passages; what the pipeline depends on."""

    async def read(self, url: str, *, query: str, budget_chars: int) -> PageText:
        """The passages of `url` that best match `query`; raise a PageError if it is unread."""
        ...


class PageReader:
    """Reads pages through one shared session, guarded against SSRF, within fixed limits."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        guard: Guard,
        limits: FetchLimits,
        context_chars: int,
        digesting: OwnThread | None = None,
    ) -> None:
        self._session = session
        self._guard = guard
        self._limits = limits
        self._context_chars = context_chars
        self._digesting = digesting

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session (its connector resolves hosts through the GuardedResolver)."""
        return self._session

    async def read(self, url: str, *, query: str, budget_chars: int) -> PageText:
        """The passages of `url` that best match `query`, at most `budget_chars` in all.

        `budget_chars` is clamped to the run's `context_chars`. Raises a PageError subclass:
        PageRefused, PageUnreachable, PageTimeout, PageTooLarge, PageTooManyRedirects,
        PageNotText, PageHTTPError or PageEmpty.
        """
        raw = await fetch_page(self._session, url, guard=self._guard, limits=self._limits)
        budget = min(budget_chars, self._context_chars)
        # Parsing and scoring are CPU-bound; a thread keeps the event loop free. A thread of
        # the reader's own: pages queued on asyncio's shared pool once took every thread of it,
        # and the guard's host lookups, which run there, failed for every run.
        digest = functools.partial(_digest, raw, query=query, budget_chars=budget)
        if self._digesting is not None:
            page = await self._digesting.call(digest)
        else:
            page = await asyncio.to_thread(digest)
        log.debug("read %s: %d passages", page.final_url, len(page.passages))
        return page


def _digest(raw: RawPage, *, query: str, budget_chars: int) -> PageText:
    """Extract `raw`'s main text and pick its passages."""
    extracted = extract(raw)
    return PageText(
        url=raw.url,
        final_url=raw.final_url,
        title=extracted.title,
        passages=best_passages(extracted.text, query=query, budget_chars=budget_chars),
    )


@asynccontextmanager
async def open_reader(settings: Settings) -> AsyncIterator[PageReader]:
    """A PageReader for `settings`, its session built on entry and closed on exit."""
    load_extractor()  # trafilatura now, not in the first page's read
    allow = AllowList.parse(settings.fetch_allow)
    resolver = GuardedResolver(allow)
    connector = aiohttp.TCPConnector(
        resolver=resolver,
        limit=CONNECTION_LIMIT,
        limit_per_host=CONNECTIONS_PER_HOST,
        ttl_dns_cache=DNS_CACHE_S,
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=settings.fetch_timeout_s),
        headers={"User-Agent": USER_AGENT, "Accept": ACCEPT},
        cookie_jar=aiohttp.DummyCookieJar(),  # no cookies carried from one site to another
        trust_env=False,  # an environment proxy would connect where the guard did not look
    )
    digesting = OwnThread("pages", background=True)
    try:
        yield PageReader(
            session,
            digesting=digesting,
            guard=UrlGuard(allow),
            limits=FetchLimits(
                timeout_s=settings.fetch_timeout_s,
                max_bytes=settings.fetch_max_bytes,
                max_redirects=settings.fetch_max_redirects,
            ),
            context_chars=settings.context_chars,
        )
    finally:
        digesting.close()
        await session.close()
        await resolver.close()
