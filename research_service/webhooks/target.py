"""A webhook URL, checked where it is given: its form, then the SSRF guard page reading uses."""

from __future__ import annotations

from typing import Any, Final

from yarl import URL

from research_service.errors import InvalidInput
from research_service.reading.addresses import AllowList
from research_service.reading.errors import PageRefused, PageUnreachable
from research_service.reading.ssrf import UrlGuard
from research_service.text import encodable

MAX_URL_CHARS: Final = 2048
FIELD: Final = "options.webhook.url"


def webhook_url(value: Any) -> str:
    """The URL of an `options.webhook` value (`{"url": "https://…"}`), its form checked."""
    if not isinstance(value, dict) or set(value) != {"url"}:
        raise InvalidInput(
            'options.webhook must be an object with one field, url: {"url": "https://…"}',
            field="options.webhook",
        )
    url = value["url"]
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"{FIELD} must be a non-empty string", field=FIELD)
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"{FIELD} is longer than {MAX_URL_CHARS} characters", field=FIELD)
    if not encodable(url):
        raise InvalidInput(f"{FIELD} is not valid Unicode text", field=FIELD)
    try:
        parsed = URL(url.strip())
    except ValueError as exc:
        raise InvalidInput(f"{FIELD} is not a URL ({exc})", field=FIELD) from None
    if parsed.scheme not in ("http", "https") or not parsed.raw_host:
        raise InvalidInput(f"{FIELD} must be an absolute http or https URL", field=FIELD)
    if parsed.user is not None or parsed.password is not None:
        raise InvalidInput(f"{FIELD} must not hold a user name or password", field=FIELD)
    return str(parsed)


async def check_reachable(url: str, *, allow: AllowList, field: str = FIELD) -> None:
    """Refuse (400) a URL whose host is not public and not in --fetch-allow."""
    try:
        await UrlGuard(allow).check(URL(url))
    except (PageRefused, PageUnreachable) as exc:
        reason = str(exc).replace(" to read it", " to send webhooks to it")
        raise InvalidInput(f"{field}: {reason}", field=field) from None
