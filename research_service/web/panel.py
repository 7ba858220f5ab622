"""The web progress panel: `/` serves its page, `/static/{name}` its scripts, styles and icon."""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Final

from aiohttp import web

from research_service.errors import NotFound
from research_service.providers.urls import is_tracking
from research_service.web import validation
from research_service.web.expect import expect_handler

#: The query parameter of `/` that attaches the panel to an existing run (the share link).
RUN_PARAM: Final = "run"
INDEX: Final = "index.html"

#: Only these kinds of files are served, each with its exact type (no sniffing, no guessing).
CONTENT_TYPES: Final = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
_ASSET_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*\.[a-z]+\Z")

# Scripts and styles come only from this origin and never inline; stream data is inserted as
# text, so this is a second line of defence, not the first.
CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        # The scripts build the page from text nodes only; a string handed to an HTML sink
        # (innerHTML and the like) throws instead of becoming markup.
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    # A run's URL is its share link; leaving for a source must not hand it to that site.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # A page of another site that opened the panel keeps no handle on it (it could later
    # send the panel's tab elsewhere), and the panel none on that page.
    "Cross-Origin-Opener-Policy": "same-origin",
}
# The files have no content hash in their names, so browsers revalidate (cheaply, by ETag)
# instead of keeping a stale panel after an upgrade.
CACHE_CONTROL: Final = "no-cache"


@dataclass(frozen=True)
class Asset:
    """One static file's bytes, its content type and its ETag."""

    body: bytes
    content_type: str
    etag: str


@functools.cache
def _assets() -> dict[str, Asset]:
    """Every file of the panel, read once (a fixed set: unknown names never grow this)."""
    assets: dict[str, Asset] = {}
    for path in resources.files("research_service.web").joinpath("static").iterdir():
        name = path.name
        suffix = name[name.rfind(".") :]
        content_type = "text/html" if name == INDEX else CONTENT_TYPES.get(suffix)
        if content_type is None or not _ASSET_NAME.match(name) or not path.is_file():
            continue
        body = path.read_bytes()
        etag = hashlib.sha256(body).hexdigest()[:20]
        assets[name] = Asset(body=body, content_type=content_type, etag=etag)
    return assets


def load_asset(name: str) -> Asset | None:
    """The packaged file `name` of the panel, or None if the panel has no such file."""
    return _assets().get(name)


def _respond(request: web.Request, asset: Asset) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": CACHE_CONTROL, "ETag": f'"{asset.etag}"'}
    if validation.not_modified(request, asset.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(
        body=asset.body, content_type=asset.content_type, charset="utf-8", headers=headers
    )


async def index(request: web.Request) -> web.Response:
    """`GET /`: the panel's page; `?run=ID` attaches it to that run.

    A share link pasted through a mail or a chat may come back with tracking parameters
    (`utm_source`, `fbclid`): those are ignored (once attached, the address is the bare share
    link). Any other parameter is still refused, so a mistyped `?rnu=` is told, not ignored.
    """
    validation.known_params(
        {name: value for name, value in request.query.items() if not is_tracking(name)},
        RUN_PARAM,
    )
    asset = load_asset(INDEX)
    if asset is None:  # pragma: no cover - only a broken install lacks it
        raise NotFound("the panel's files are not installed; reinstall research-service")
    return _respond(request, asset)


async def static(request: web.Request) -> web.Response:
    """`GET /static/{name}`: one of the panel's scripts, styles or icons."""
    validation.known_params(request.query)
    name = request.match_info["name"]
    asset = None if name == INDEX else load_asset(name)
    if asset is None:
        raise NotFound(f"no panel file {name!r}; the panel is served at /")
    return _respond(request, asset)


def setup_panel(app: web.Application) -> None:
    """Register the panel's two routes."""
    app.router.add_get("/", index, expect_handler=expect_handler)
    app.router.add_get("/static/{name}", static, expect_handler=expect_handler)
