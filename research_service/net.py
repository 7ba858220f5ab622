"""What an HTTP request over aiohttp tells its caller: why it failed, how long to wait.

Shared by the providers, the export download and the terminal client. (Host names and URLs
in settings and messages: `addresses`, which loads no aiohttp.)
"""

from __future__ import annotations

import email.utils
import math
import os
import socket
import ssl
import time
from collections.abc import Mapping

import aiohttp

from research_service.addresses import without_userinfo


def describe(exc: BaseException) -> str:
    """A short, human description of why a request failed (e.g. "Connection refused")."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, ssl.SSLError):  # its errno (1) is no system error's
            return _tls_failure(error)
        # asyncio words a refused connection "Connect call failed (address)": say why instead.
        if error.errno and not isinstance(error, socket.gaierror):
            return os.strerror(error.errno)
        if error.strerror:
            return error.strerror
    text = without_userinfo(str(exc))  # an error may quote a URL, and its password
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _tls_failure(error: ssl.SSLError) -> str:
    """What went wrong in a TLS handshake: "wrong version number (is it https?)" and the like."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the TLS certificate was refused: {error.verify_message}"
    reason = (error.reason or "").replace("_", " ").lower() or str(error)
    hint = " (does it speak https?)" if "wrong version number" in reason else ""
    return f"TLS failed: {reason}{hint}"


def retry_after_s(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """The wait the server asked for, in seconds: `retry-after-ms`, then `Retry-After`.

    `Retry-After` may be seconds or an HTTP date; a date in the past means no wait (0).
    None when the headers ask for nothing or cannot be read.
    """
    if headers is None:
        return None
    for name, per_second in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / per_second
        except ValueError:
            continue
        if math.isfinite(seconds):
            return max(0.0, seconds)
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        when = email.utils.mktime_tz(parsed)
    except (TypeError, ValueError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))
