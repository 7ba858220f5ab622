"""Browser-origin safety: the Host allow-list, refusing cross-site writes, and CORS."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from research_service.web.keys import SETTINGS
from research_service.web.problems import problem

#: The --cors-origins origin a request came from (its answer carries the CORS headers).
CORS_ORIGIN = web.RequestKey("cors_origin", str)
#: The health probes: load balancers and orchestrators ask them every few seconds.
HEALTH_PATHS: Final = frozenset({"/healthz", "/readyz"})
#: Open to any Host: probes ask by address, and Prometheus scrapes each node by its own
#: (`/metrics` still wants its key or token).
ANY_HOST_PATHS: Final = HEALTH_PATHS | {"/metrics"}
#: Methods that change something; the one-shot GET /v1/research too (it starts a run).
UNSAFE_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})
UNSAFE_ROUTES: Final = frozenset({"research"})
#: Sec-Fetch-Site values of a request another origin's page made.
CROSS_ORIGIN_FETCHES: Final = frozenset({"cross-site", "same-site"})
#: What a listed origin's pages may send and read.
CORS_METHODS: Final = "GET, POST, DELETE"
CORS_HEADERS: Final = "Authorization, Content-Type, Last-Event-ID"
CORS_EXPOSED: Final = "Location, Retry-After, WWW-Authenticate"
CORS_MAX_AGE_S: Final = 600
# A host name or IPv4 address (letters, digits, dots, dashes, underscores), or [IPv6].
_HOST: Final = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:[0-9]{1,5})?\Z")


def host_name(value: str) -> str | None:
    """The name in a Host header (lowercase, no port, no brackets, no final dot); None if bad."""
    # ASCII only: str.lower() and str.strip() would turn U+212A KELVIN SIGN into "k" and drop
    # U+00A0, admitting look-alikes of an allowed name.
    if not value.isascii():
        return None
    match = _HOST.match(value.strip().lower())
    if match is None:
        return None
    return match.group(1).strip("[]").rstrip(".")


def host_allowed(value: str, allowed: tuple[str, ...]) -> bool:
    """Whether a Host header names a host in `allowed` (`.x.org`: x.org and below; `*`: any)."""
    if "*" in allowed:
        return True
    name = host_name(value)
    if name is None:
        return False
    for pattern in allowed:
        if name == pattern.strip("[]"):
            return True
        if pattern.startswith(".") and (name == pattern[1:] or name.endswith(pattern)):
            return True
    return False


def _own_hosts(request: web.Request) -> set[str]:
    """The host[:port] values the browser used for this service (as the proxy saw it too)."""
    hosts = {request.headers.get("Host", "").strip().lower()}
    forwarded = request.headers.get("X-Forwarded-Host")
    if forwarded:
        # A browser cannot set it on a cross-site request without a preflight we refuse.
        hosts.add(forwarded.split(",")[0].strip().lower())
    hosts.discard("")
    return hosts


def _netloc(origin: str) -> str | None:
    """The host[:port] of an Origin header, or None when it is not an http(s) origin."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
        return None
    return parts.netloc.lower()


def origin_allowed(request: web.Request, origin: str) -> bool:
    """Whether `origin` is this service's own or one listed in --cors-origins."""
    if origin.rstrip("/") in request.app[SETTINGS].origins:
        return True
    netloc = _netloc(origin)
    return netloc is not None and netloc in _own_hosts(request)


def _is_unsafe(request: web.Request) -> bool:
    return request.method in UNSAFE_METHODS or request.match_info.route.name in UNSAFE_ROUTES


def _cross_site(request: web.Request) -> str | None:
    """Why `request` is a cross-site write to refuse, or None."""
    origin = request.headers.get("Origin")
    if origin is not None:
        if origin_allowed(request, origin):
            return None
        return f"requests from {origin[:100]!r} may not change anything here"
    # same-site is another origin too (another port of localhost, a sibling subdomain), and
    # browsers send no Origin on a GET from an <img> or a link.
    if request.headers.get("Sec-Fetch-Site") in CROSS_ORIGIN_FETCHES:
        return "requests from another site may not change anything here"
    return None


def _preflight(request: web.Request, origin: str | None) -> web.StreamResponse:
    """The answer to a CORS preflight: the allowances for a listed origin, nothing else."""
    if origin is None or origin.rstrip("/") not in request.app[SETTINGS].origins:
        return problem(
            403,
            slug="origin-not-allowed",
            title="Origin not allowed",
            detail="this origin is not in --cors-origins; pages elsewhere may not call the API",
        )
    response = web.Response(status=204)
    response.headers.update(
        {
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_HEADERS,
            "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
        }
    )
    return response


def _allow_origin(request: web.Request, response: web.StreamResponse, origin: str) -> None:
    """Let a listed origin's page read `response`, with credentials."""
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
    response.headers.add("Vary", "Origin")


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse unknown hosts (421) and cross-site writes (403); answer CORS for listed origins."""
    settings = request.app[SETTINGS]
    host = request.headers.get("Host")
    if (
        request.path not in ANY_HOST_PATHS
        and host is not None
        and not host_allowed(host, settings.host_names)
    ):
        return problem(
            421,
            slug="host-not-allowed",
            title="Host not allowed",
            detail="this service does not answer to that Host; if it is yours, add it to "
            "--allowed-hosts",
        )
    origin = request.headers.get("Origin")
    listed = origin is not None and origin.rstrip("/") in settings.origins
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        response: web.StreamResponse = _preflight(request, origin)
    elif _is_unsafe(request) and (reason := _cross_site(request)) is not None:
        response = problem(
            403,
            slug="cross-site-request",
            title="Cross-site request refused",
            detail=f"{reason}; list the page's origin in --cors-origins to allow it",
        )
    else:
        # Headers are added in on_response_prepare too late for a stream: add them now.
        if listed:
            assert origin is not None
            request[CORS_ORIGIN] = origin
        return await handler(request)
    if listed and response.status == 204:
        assert origin is not None
        _allow_origin(request, response, origin)
    return response


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: a listed origin's page may read every answer, streams included."""
    origin = request.get(CORS_ORIGIN)
    if origin is not None:
        _allow_origin(request, response, origin)
