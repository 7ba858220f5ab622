"""A service's URL as given on the command line, checked before any request is made."""

from __future__ import annotations

from typing import Final
from urllib.parse import SplitResult, urlsplit

from research_service.addresses import redact_url
from research_service.errors import UsageError

#: What to pass instead of a URL that is not one, for messages.
SERVER_HINT: Final = "pass the service's base URL, e.g. http://127.0.0.1:8080"
RUN_URL_HINT: Final = "pass a run id or a run's URL, e.g. http://127.0.0.1:8080/v1/runs/ID/events"


def split_url(url: str, *, what: str, hint: str = SERVER_HINT) -> SplitResult:
    """The parts of an http(s) URL with a host and a valid port; UsageError saying what is wrong.

    `what` names the URL in the message (`--server 'localhost:8080'`), `hint` what to pass.
    """
    try:
        parts = urlsplit(url)
        port = parts.port  # a port out of range or not a number is a ValueError here
    except ValueError as exc:
        raise UsageError(f"{what} is not a valid URL ({exc}); {hint}") from None
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"{what} needs http:// or https:// in front; {hint}")
    host = parts.hostname
    if not host or any(c.isspace() or not c.isprintable() for c in host):
        raise UsageError(f"{what} has no valid host; {hint}")
    if port == 0:
        raise UsageError(f"{what} has port 0, which cannot be reached; {hint}")
    return parts


def check_server(url: str, *, flag: str = "--server") -> str:
    """`url` if it can be a service's base URL (http or https, a host, a valid port)."""
    split_url(url, what=f"{flag} {redact_url(url)!r}")
    return url
