"""Short, human words for why an HTTP request over aiohttp failed (e.g. "Connection refused").

Shared by the search provider, the export download and the terminal client.
"""

from __future__ import annotations

import os
import socket

import aiohttp


def describe(exc: BaseException) -> str:
    """A short, human description of why a request failed (e.g. "Connection refused")."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        # asyncio words a refused connection "Connect call failed (address)": say why instead.
        if error.errno and not isinstance(error, socket.gaierror):
            return os.strerror(error.errno)
        if error.strerror:
            return error.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
