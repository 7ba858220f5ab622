"""LoopbackWeb: a small web of pages on 127.0.0.1 (port 0) for the page reader's tests.

Pages: an article wrapped in boilerplate, redirect chains, a huge streamed page, slow pages held
by an event nobody sets, non-HTML files, redirects to private addresses and other schemes, a
404, plain text and a page in a legacy charset. `requests` records every path asked for.
"""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from tests.loopback import HOST, LoopbackServer

CHUNK_BYTES: Final = 64 * 1024
HUGE_BYTES: Final = 64 * 1024 * 1024
REDIRECT_CODES: Final = (301, 302, 303, 307, 308)

ARTICLE_TITLE: Final = "How the Skerryvore lighthouse was built"
ARTICLE_PARAGRAPHS: Final = (
    "Skerryvore stands on a reef eleven miles south-west of Tiree. Alan Stevenson designed it "
    "in 1838, and building it took six summers because the reef is under water at high tide "
    "and the Atlantic swell makes landing impossible for weeks at a time.",
    "The tower is built of granite from the Isle of Mull. Each course of stone was cut to dovetail "
    "into the next, so that the whole tower behaves like a single block against the waves. "
    "The base is solid masonry for the first twenty-six feet.",
    "Its light uses a Fresnel lens: concentric rings of glass prisms that bend the lamp's light "
    "into a horizontal beam. The lens let a single oil lamp be seen eighteen miles out to sea, "
    "far further than the reflectors used in older lighthouses.",
    "The keepers lived in the tower for weeks without relief. A shore station at Hynish on Tiree "
    "held their families, and a signal tower there let them exchange messages with flags when "
    "the weather stopped the supply boat from crossing.",
    "In 1954 a fire gutted the interior and the lighthouse was dark for two years. It was "
    "automated in 1994, and the keepers left the reef for the last time that spring.",
)
BOILERPLATE: Final = (
    "Home",
    "Subscribe to our newsletter",
    "Buy cheap widgets now",
    "trackVisitor",
    "Copyright Coastal Heritage Trust",
    "Accept all cookies",
)

PLAIN_TEXT: Final = (
    "Notes on the café at Hynish\n\n"
    "The café in the old signal tower serves crème brûlée to visitors who come to see the\n"
    "museum of the lighthouse keepers.\n"
)
LATIN_TITLE: Final = "Façade"
LATIN_TEXT: Final = (
    "The façade of the shore station at Hynish was restored in 2004. Its naïve granite "
    "carvings, weathered by a century and a half of salt wind, were cleaned stone by stone."
)


def article_html() -> str:
    """The article wrapped in navigation, header, ads, cookie banner, scripts and footer."""
    body = "\n".join(f"<p>{text}</p>" for text in ARTICLE_PARAGRAPHS)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{ARTICLE_TITLE}</title>
<script>function trackVisitor() {{ return "visitor tracking pixel"; }} trackVisitor();</script>
<style>body {{ font-family: serif; }}</style></head>
<body>
<header><nav><ul><li><a href="/">{BOILERPLATE[0]}</a></li><li><a href="/about">About</a></li>
<li><a href="/contact">Contact</a></li></ul></nav></header>
<div class="cookie-banner">{BOILERPLATE[5]} <button>OK</button></div>
<aside class="ad advertisement sidebar"><a href="/ads">{BOILERPLATE[2]}</a></aside>
<main><article><h1>{ARTICLE_TITLE}</h1>
{body}
</article></main>
<aside class="newsletter"><a href="/subscribe">{BOILERPLATE[1]}</a></aside>
<footer><p>{BOILERPLATE[4]} 2024. All rights reserved.</p>
<nav><a href="/privacy">Privacy</a> <a href="/terms">Terms</a></nav></footer>
<script>window.dataLayer = [{{"event": "{BOILERPLATE[3]}"}}];</script>
</body></html>"""


def latin_html() -> bytes:
    """A page in windows-1252 that says so only in its <meta>, not in its Content-Type."""
    return (
        f'<html><head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
        f"<title>{LATIN_TITLE}</title></head><body><article><p>{LATIN_TEXT}</p>"
        f"<p>{LATIN_TEXT}</p></article></body></html>"
    ).encode("cp1252")


class LoopbackWeb(LoopbackServer):
    """The pages above served on 127.0.0.1 for the length of an `async with`."""

    def __init__(self, *, huge_bytes: int = HUGE_BYTES) -> None:
        super().__init__()
        self.huge_bytes = huge_bytes
        self.requests: list[str] = []
        # Held pages wait on this; tests never set it, so only a client timeout ends them.
        self.hold = asyncio.Event()
        self.huge_sent = 0
        self.huge_finished = asyncio.Event()

    def url(self, path: str, *, host: str = HOST) -> str:
        """The address of `path` on this web, optionally through another spelling of the host."""
        return f"http://{host}:{self.port}{path}"

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_routes(
            [
                web.get("/article", self._article),
                web.get("/redirect/{count:\\d+}", self._redirect),
                web.get("/to/{target}", self._redirect_away),
                web.get("/huge", self._huge),
                web.get("/huge-declared", self._huge_declared),
                web.get("/slow", self._slow),
                web.get("/slow-body", self._slow_body),
                web.get("/paper.pdf", self._pdf),
                web.get("/logo.png", self._png),
                web.get("/missing", self._missing),
                web.get("/plain", self._plain),
                web.get("/latin", self._latin),
                web.get("/boilerplate-only", self._boilerplate_only),
                web.get("/punycode", self._punycode),
            ]
        )
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        return await handler(request)

    async def _article(self, request: web.Request) -> web.Response:
        return web.Response(text=article_html(), content_type="text/html")

    async def _punycode(self, request: web.Request) -> web.Response:
        """The article, declared in a charset no page has: punycode decodes in quadratic time."""
        body = article_html().encode() + b"-" + b"a" * 20_000
        return web.Response(body=body, headers={"Content-Type": "text/html; charset=punycode"})

    async def _redirect(self, request: web.Request) -> web.Response:
        """`/redirect/n`: n redirects to the article, statuses and Location forms varying."""
        count = int(request.match_info["count"])
        target = "/article" if count <= 1 else f"/redirect/{count - 1}"
        location = target if count % 2 else self.url(target)
        status = REDIRECT_CODES[count % len(REDIRECT_CODES)]
        return web.Response(status=status, headers={"Location": location})

    async def _redirect_away(self, request: web.Request) -> web.Response:
        targets = {
            "metadata": "http://169.254.169.254/latest/meta-data/",
            "private": "http://10.0.0.1/admin",
            "ipv6-loopback": f"http://[::1]:{self.port}/article",
            "file": "file:///etc/passwd",
            "ftp": f"ftp://{HOST}/pub/readme.txt",
            "nowhere": "",
        }
        location = targets.get(request.match_info["target"])
        if location is None:
            raise web.HTTPNotFound()
        headers = {"Location": location} if location else {}
        return web.Response(status=302, headers=headers)

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        """A page far bigger than any test's cap, streamed in chunks with no Content-Length."""
        response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
        response.enable_chunked_encoding()
        return await self._stream_huge(request, response)

    async def _huge_declared(self, request: web.Request) -> web.StreamResponse:
        """The same page, announcing its size in Content-Length."""
        response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
        response.content_length = self.huge_bytes
        return await self._stream_huge(request, response)

    async def _stream_huge(
        self, request: web.Request, response: web.StreamResponse
    ) -> web.StreamResponse:
        chunk = b"<p>" + b"lighthouse " * (CHUNK_BYTES // 11 - 1) + b"</p>"
        chunk = chunk[:CHUNK_BYTES].ljust(CHUNK_BYTES, b" ")
        try:
            await response.prepare(request)
            while self.huge_sent < self.huge_bytes:
                await response.write(chunk)
                self.huge_sent += len(chunk)
            await response.write_eof()
            return response
        finally:
            self.huge_finished.set()

    async def _slow(self, request: web.Request) -> web.Response:
        await self.hold.wait()
        return await self._article(request)

    async def _slow_body(self, request: web.Request) -> web.StreamResponse:
        """Headers and the start of the body at once, the rest never."""
        response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"<html><body><p>The keepers of Skerryvore")
        await self.hold.wait()
        return response

    async def _pdf(self, request: web.Request) -> web.Response:
        return web.Response(body=b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", content_type="application/pdf")

    async def _png(self, request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n\x1a\n" + bytes(64), content_type="image/png")

    async def _missing(self, request: web.Request) -> web.Response:
        return web.Response(status=404, text="<h1>Not here</h1>", content_type="text/html")

    async def _plain(self, request: web.Request) -> web.Response:
        return web.Response(
            body=PLAIN_TEXT.encode("iso-8859-1"),
            headers={"Content-Type": "text/plain; charset=iso-8859-1"},
        )

    async def _latin(self, request: web.Request) -> web.Response:
        return web.Response(body=latin_html(), headers={"Content-Type": "text/html"})

    async def _boilerplate_only(self, request: web.Request) -> web.Response:
        html = (
            "<html><head><title>Nothing</title><script>var a = 1;</script></head>"
            "<body><nav><a href='/'>Home</a></nav></body></html>"
        )
        return web.Response(text=html, content_type="text/html")
