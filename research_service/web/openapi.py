"""`GET /openapi.json`: the OpenAPI 3.1 document of the HTTP API, served as the package has it."""

from __future__ import annotations

import functools
import hashlib
from importlib import resources
from typing import Final

from aiohttp import web

from research_service.web import validation
from research_service.web.expect import expect_handler

OPENAPI_PATH: Final = "/openapi.json"
#: Where the document lives in the package (kept in the repository, checked by the tests).
DOCUMENT_FILE: Final = ("static", "openapi.json")
# The document changes only with a release: clients revalidate cheaply by ETag.
CACHE_CONTROL: Final = "no-cache"


@functools.cache
def document() -> tuple[bytes, str]:
    """The document's bytes and their entity tag (unquoted), read once."""
    body = resources.files("research_service.web").joinpath(*DOCUMENT_FILE).read_bytes()
    return body, hashlib.sha256(body).hexdigest()[:20]


async def openapi(request: web.Request) -> web.Response:
    """`GET /openapi.json`: the document (open to anyone, like the panel)."""
    validation.known_params(request.query)
    body, etag = document()
    headers = {"Cache-Control": CACHE_CONTROL, "ETag": f'"{etag}"'}
    if validation.not_modified(request, etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


def setup_openapi(app: web.Application) -> None:
    """Register `GET /openapi.json`."""
    app.router.add_get(
        OPENAPI_PATH, openapi, allow_head=False, name="openapi", expect_handler=expect_handler
    )
