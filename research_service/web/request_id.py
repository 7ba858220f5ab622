"""Request ids: taken from `X-Request-ID` when sane, else made; sent back and logged."""

from __future__ import annotations

import re
import uuid
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest

from research_service.logs import request_id_var, run_id_var

#: The header a request id comes in and goes back out in.
REQUEST_ID_HEADER: Final = "X-Request-ID"
#: A request id taken from a client: short, and nothing a log line could be forged with.
_SANE_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: The request's id, for the response header and the access log.
REQUEST_ID: Final = web.RequestKey("request_id", str)


def request_id_of(request: BaseRequest) -> str:
    """The request's id: kept from before, the client's when sane, else a new one."""
    known = request.get(REQUEST_ID)
    if isinstance(known, str):
        return known
    given = request.headers.get(REQUEST_ID_HEADER, "")
    chosen = given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex
    request[REQUEST_ID] = chosen
    return chosen


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give the request its id, and name it (and the run it addresses) in every log line."""
    request_token = request_id_var.set(request_id_of(request))
    run_token = run_id_var.set(request.match_info.get("run_id"))
    try:
        return await handler(request)
    finally:
        run_id_var.reset(run_token)
        request_id_var.reset(request_token)


async def send_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: every response says the request's id in `X-Request-ID`."""
    response.headers[REQUEST_ID_HEADER] = request_id_of(request)
