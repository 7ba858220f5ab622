"""Host names and URLs as settings and messages name them: loopback or not, passwords hidden.

Apart from `net` (which needs aiohttp) so that reading the settings loads no HTTP client: a
command such as `research-service keys` starts without it.
"""

from __future__ import annotations

import errno
import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from research_service.errors import ConfigError

#: A URL's "user:password@" (or "user@"), after its scheme.
_USERINFO: Final = re.compile(r"://[^/?#\s]*@")  # to the last "@": a password may hold one
#: A password given as a query parameter (`postgresql://host/db?password=…`).
_QUERY_PASSWORD: Final = re.compile(r"([?&](?:password|pass|pwd)=)[^&#]*", re.IGNORECASE)


def is_loopback(host: str) -> bool:
    """Whether `host` (a --host value) is reachable from this machine only."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def url_host(host: str) -> str:
    """`host` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def cannot_listen(exc: OSError, host: str, port: int, *, flag: str) -> ConfigError:
    """What to tell the operator when HOST:PORT cannot be listened on; `flag` sets the port."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"port {port} on {host} is already in use by another process; stop it or choose "
            f"another {flag}"
        )
    return ConfigError(f"cannot listen on {host}:{port} ({flag}): {exc.strerror or exc}")


def redact_url(url: str) -> str:
    """The URL with its password replaced, fit for a log line or an error message."""
    url = _QUERY_PASSWORD.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL ("http://[::1"): its user and password are taken out
        return without_userinfo(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def public_url(url: str) -> str:
    """The URL without a user and password, query or fragment, as clients may see it.

    A model gateway or SearXNG behind basic auth takes its credentials in the URL, and its
    failures reach run events, their listeners and the open `/readyz`.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return without_userinfo(url).split("?", 1)[0]
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", "")).rstrip("/")


def without_userinfo(text: str) -> str:
    """`text` with every URL's user and password taken out (an error's or a log's words)."""
    return _USERINFO.sub("://", text) if "@" in text else text
