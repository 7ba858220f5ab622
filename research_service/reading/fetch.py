"""Fetch one page's bytes: SSRF check on every hop, redirects by hand, type and size limits.

A body over `max_bytes` is refused (PageTooLarge), not truncated: a declared Content-Length over
the cap is refused before reading, and a streamed body is read only until it passes the cap,
then the connection is closed. A truncated HTML document would extract unpredictably, and the
cap is an operator setting that can be raised.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final, Protocol

import aiohttp
from aiohttp import hdrs
from yarl import URL

from research_service.net import describe
from research_service.reading.errors import (
    PageHTTPError,
    PageNotText,
    PageRefused,
    PageTimeout,
    PageTooLarge,
    PageTooManyRedirects,
    PageUnreachable,
)

log = logging.getLogger(__name__)

READABLE_TYPES: Final = ("text/html", "application/xhtml+xml", "text/plain")
HTML_TYPES: Final = frozenset({"text/html", "application/xhtml+xml"})
REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES: Final = 64 * 1024


class Guard(Protocol):
    """Decides whether a URL may be requested (see `ssrf.UrlGuard`)."""

    async def check(self, url: URL) -> None:
        """Return if `url` may be fetched; raise a PageError if not."""
        ...


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """How long, how big and how many redirects one page read may take."""

    timeout_s: float
    max_bytes: int
    max_redirects: int


@dataclass(frozen=True, slots=True)
class RawPage:
    """A page's body as fetched, with what the response said about it."""

    url: str
    final_url: str
    media_type: str
    charset: str | None
    body: bytes

    @property
    def is_html(self) -> bool:
        """Whether the body is HTML (or XHTML) rather than plain text."""
        return self.media_type in HTML_TYPES


async def fetch_page(
    session: aiohttp.ClientSession, url: str, *, guard: Guard, limits: FetchLimits
) -> RawPage:
    """Fetch `url` (following redirects) within `limits`; raise a PageError on any failure."""
    try:
        start = URL(url)
    except (ValueError, TypeError):
        raise PageRefused(f"{url!r} is refused: it is not a valid URL", url=url) from None
    try:
        async with asyncio.timeout(limits.timeout_s):
            return await _follow(session, start, guard=guard, limits=limits)
    except TimeoutError:
        # Also aiohttp's own timeouts (ServerTimeoutError is a TimeoutError).
        raise PageTimeout(url=url, timeout_s=limits.timeout_s) from None
    except aiohttp.ClientError as exc:
        raise PageUnreachable(
            f"{url} could not be read: {describe(exc)}; check the address or the network",
            url=url,
        ) from None


async def _follow(
    session: aiohttp.ClientSession, start: URL, *, guard: Guard, limits: FetchLimits
) -> RawPage:
    """Request `start` and each redirect target in turn, checking every hop first."""
    hop = start.with_fragment(None)
    for _ in range(limits.max_redirects + 1):
        await _check(guard, hop, start=start)
        async with session.get(hop, allow_redirects=False) as response:
            if response.status in REDIRECT_STATUSES:
                hop = _redirect_target(response, hop)
                log.debug("%s redirects to %s", response.url, hop)
                continue
            if not 200 <= response.status < 300:
                raise PageHTTPError(
                    url=str(hop), status=response.status, reason=response.reason or ""
                )
            media_type = _readable_type(response, hop)
            body = await _read_capped(response, max_bytes=limits.max_bytes, url=str(hop))
            return RawPage(
                url=str(start),
                final_url=str(hop),
                media_type=media_type,
                charset=response.charset,
                body=body,
            )
    raise PageTooManyRedirects(url=str(start), max_redirects=limits.max_redirects)


async def _check(guard: Guard, hop: URL, *, start: URL) -> None:
    """Run the guard on `hop`, naming the page that redirected there if it is refused."""
    try:
        await guard.check(hop)
    except (PageRefused, PageUnreachable) as exc:
        if hop == start:
            raise
        raise type(exc)(f"{start} redirected: {exc}", url=exc.url) from None


def _redirect_target(response: aiohttp.ClientResponse, hop: URL) -> URL:
    """Where a redirect response points, resolved against the URL that answered it."""
    location = response.headers.get(hdrs.LOCATION)
    if not location:
        raise PageHTTPError(
            url=str(hop), status=response.status, reason="redirect without a Location"
        )
    try:
        return hop.join(URL(location)).with_fragment(None)
    except (ValueError, TypeError):
        raise PageRefused(
            f"{hop} redirected to {location!r}, which is not a valid URL", url=str(hop)
        ) from None


def _readable_type(response: aiohttp.ClientResponse, hop: URL) -> str:
    """The response's media type if it is one we read; raise PageNotText otherwise."""
    declared = response.headers.get(hdrs.CONTENT_TYPE, "")
    media_type = response.content_type if declared else ""
    if media_type not in READABLE_TYPES:
        raise PageNotText(url=str(hop), content_type=media_type, accepted=READABLE_TYPES)
    return media_type


async def _read_capped(response: aiohttp.ClientResponse, *, max_bytes: int, url: str) -> bytes:
    """The body, or PageTooLarge as soon as it is known to exceed `max_bytes`."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        response.close()
        raise PageTooLarge(url=url, max_bytes=max_bytes)
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            response.close()  # stop the transfer: drop the connection, do not drain it
            raise PageTooLarge(url=url, max_bytes=max_bytes)
    return bytes(body)
