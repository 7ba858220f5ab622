"""The API's side of completion webhooks: a run's URL checked, its deliveries made and shown."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from research_service.errors import InvalidInput, StoreUnavailable
from research_service.records import RunRecord
from research_service.web.access import ACCESS
from research_service.web.keys import MANAGER, SETTINGS, WEBHOOKS
from research_service.web.origin import host_allowed
from research_service.webhooks.signing import SERVER_SCOPE

_UNTOLD = "its webhook could not be stored (the run store is unavailable); create it again"
#: The forwarded schemes believed (a proxy in front says how the client came in).
_SCHEMES = frozenset({"http", "https"})
#: A forwarded path prefix believed: segments of unreserved characters, nothing else (no `.`
#: or `..`: a link must not climb out of the service's path).
_PREFIX = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)*")


def base_url(request: web.Request) -> str:
    """The service's address as clients reach it, for a notification's links.

    `--public-url` when the operator gave it. Else as this request reached the service: the
    proxy's `X-Forwarded-Host` (with the port the client used) when its name is one
    --allowed-hosts serves, else the Host header (which passed the allow-list); the proxy's
    `X-Forwarded-Proto` and `X-Forwarded-Prefix` (a path such as /research) when given.
    """
    settings = request.app[SETTINGS]
    if settings.public_url is not None:
        return settings.public_url.rstrip("/")
    headers = request.headers
    forwarded = headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    scheme = forwarded if forwarded in _SCHEMES else request.scheme
    host = headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    if not host or not host_allowed(host, settings.host_names):
        host = request.host
    prefix = headers.get("X-Forwarded-Prefix", "").split(",")[0].strip().rstrip("/")
    return f"{scheme}://{host}{prefix if _PREFIX.fullmatch(prefix) else ''}"


async def check_webhook(request: web.Request, url: str | None) -> None:
    """Refuse (400) a run's webhook URL before the run is made."""
    if url is None:
        return
    webhooks = request.app.get(WEBHOOKS)
    if webhooks is None:
        raise InvalidInput(
            "options.webhook: this server sends no webhooks (a replay server)",
            field="options.webhook",
        )
    await webhooks.check(url)


async def add_webhooks(request: web.Request, record: RunRecord, url: str | None) -> None:
    """Keep the deliveries the new run's end owes (its own URL, and --webhook-url)."""
    webhooks = request.app.get(WEBHOOKS)
    if webhooks is None:
        return
    try:
        await webhooks.add(record, url=url, owner=request[ACCESS].owner, base_url=base_url(request))
    except StoreUnavailable:
        # The run would end untold: stop it, and the client may create it again later.
        await request.app[MANAGER].cancel(record.id, code="cancelled", message=_UNTOLD)
        raise


async def webhook_states(request: web.Request, record: RunRecord) -> list[dict[str, Any]]:
    """How the run's deliveries stand (its snapshot's `webhooks`).

    The server's own (`--webhook-url`) only to an admin (everyone, with auth off): its URL is
    the operator's, and may carry a secret in its query.
    """
    webhooks = request.app.get(WEBHOOKS)
    if webhooks is None:
        return []
    deliveries = await webhooks.outbox.of_run(record.id)
    if not request[ACCESS].admin:
        deliveries = [delivery for delivery in deliveries if delivery.scope != SERVER_SCOPE]
    return [delivery.public() for delivery in deliveries]
