"""The `Expect` request header (RFC 9110 §10.1.1): `100-continue` when the body is read, else 417.

aiohttp runs a route's expect handler before the middlewares, so before authentication and
every check of the request. This one only notes that the client holds its body back; the
`100 Continue` goes out when the handler starts to read the body (`validation.send_continue`),
after those checks have passed. A request refused on its headers (auth, origin, parameters,
Content-Type, a Content-Length over the limit) gets its final problem+json status instead,
and its body is never sent.
"""

from __future__ import annotations

from typing import Final

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from research_service.errors import ExpectationFailed
from research_service.web.problems import from_request_error
from research_service.web.validation import CONTINUE_OWED

#: The one expectation HTTP defines (case-insensitive).
CONTINUE: Final = "100-continue"


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """Every route's: take `100-continue` (answered as the body is read), refuse any other."""
    if request.version != HttpVersion11:
        return None  # HTTP/1.0 has no interim responses: aiohttp ignores Expect there too
    given = [
        item.strip()
        for value in request.headers.getall(hdrs.EXPECT, ())
        for item in value.split(",")
        if item.strip()
    ]
    unknown = [item for item in given if item.lower() != CONTINUE]
    if unknown:
        return from_request_error(
            ExpectationFailed(
                f"Expect: {', '.join(unknown)} is not supported; only {CONTINUE} is: "
                f"send Expect: {CONTINUE} or no Expect header"
            )
        )
    if given:
        request[CONTINUE_OWED] = True
    return None


async def close_if_body_held_back(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: a final status sent instead of `100 Continue` closes the connection.

    The client may send the body it held back, late, or its next request: the server cannot
    tell which bytes are which, so the connection takes no further request.
    """
    if request.get(CONTINUE_OWED) and request.can_read_body:
        response.force_close()
        # aiohttp wrote the response's Connection header before this hook ran.
        response.headers[hdrs.CONNECTION] = "close"
