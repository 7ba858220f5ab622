"""The API's side of completion webhooks: a run's URL checked, its deliveries made and shown."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from research_service.errors import InvalidInput, StoreUnavailable
from research_service.records import RunRecord
from research_service.web.access import ACCESS
from research_service.web.keys import MANAGER, WEBHOOKS
from research_service.webhooks.signing import SERVER_SCOPE

_UNTOLD = "its webhook could not be stored (the run store is unavailable); create it again"
#: The forwarded schemes believed (a proxy in front says how the client came in).
_SCHEMES = frozenset({"http", "https"})


def base_url(request: web.Request) -> str:
    """The service's address as this request reached it, for a notification's links.

    The Host header has passed the allow-list (--allowed-hosts); the scheme is the proxy's
    X-Forwarded-Proto when it names one.
    """
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    scheme = forwarded if forwarded in _SCHEMES else request.scheme
    return f"{scheme}://{request.host}"


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
