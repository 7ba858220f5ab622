"""RFC 9457 problem+json responses and the middleware that makes every error one."""

from __future__ import annotations

import logging
from typing import Any, Final

from aiohttp import web
from aiohttp.typedefs import Handler

from research_service.errors import MethodNotAllowed, RequestError, Unauthorized
from research_service.events import dumps
from research_service.problem_json import PROBLEM_CONTENT_TYPE, PROBLEM_TYPE_BASE
from research_service.web.validation import MAX_BODY_BYTES

log = logging.getLogger(__name__)


_HTTP_SLUGS: Final = {
    400: ("bad-request", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("body-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem(
    status: int,
    *,
    slug: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """A problem+json response."""
    body = {"type": PROBLEM_TYPE_BASE + slug, "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return web.Response(
        status=status,
        body=dumps(body).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def from_request_error(exc: RequestError) -> web.Response:
    """The problem response for one of our request errors."""
    headers: dict[str, str] = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = ", ".join(exc.allowed)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = exc.challenge
    response = problem(
        exc.status,
        slug=exc.slug,
        title=exc.title,
        detail=exc.detail,
        headers=headers,
        field=exc.field,
    )
    if exc.close_connection:
        response.force_close()
    return response


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    slug, title = _HTTP_SLUGS.get(exc.status, ("http-error", exc.reason))
    headers: dict[str, str] = {}
    if exc.status == 405:
        allowed = sorted(getattr(exc, "allowed_methods", ()))
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed on {request.path}; use {', '.join(allowed)}"
    elif exc.status == 404:
        detail = f"no route for {request.path}; see docs/api.md for the API"
    elif exc.status == 413:
        detail = f"the request body is larger than the {MAX_BODY_BYTES} byte limit"
    else:
        detail = exc.text or exc.reason
    return problem(exc.status, slug=slug, title=title, detail=detail, headers=headers)


def _cut_short(request: web.Request, exc: Exception) -> web.StreamResponse:
    """A failure once the answer has begun: the connection is closed, no second answer sent.

    A stream's or a download's head went out already, so no other answer can follow on the
    connection. The client sees the body end without its last chunk, as when a connection
    drops: an event stream's client resumes from its Last-Event-ID, and a download is seen to
    be incomplete.
    """
    if isinstance(exc, RequestError):
        log.warning("%s %s cut short: %s", request.method, request.path, exc)
    else:
        log.error("%s %s cut short by an error", request.method, request.path, exc_info=exc)
    if request.transport is not None:
        request.transport.close()
    # Never sent (the connection is closing): aiohttp finds it cannot write, and moves on.
    return web.Response(status=exc.status if isinstance(exc, RequestError) else 500)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every error as problem+json: never an HTML page, never a 500 for client input."""
    try:
        return await handler(request)
    except Exception as exc:
        if request.writer.output_size > 0:
            return _cut_short(request, exc)
        if isinstance(exc, RequestError):
            return from_request_error(exc)
        if isinstance(exc, web.HTTPException):
            if exc.status < 400:
                raise
            return _from_http_exception(request, exc)
        log.exception("unhandled error in %s %s", request.method, request.path)
        return problem(
            500,
            slug="internal",
            title="Internal server error",
            detail="the service failed unexpectedly; the error was logged",
        )
