"""What the tests' loopback servers share: a free port, and serving an aiohttp app on 127.0.0.1."""

from __future__ import annotations

import atexit
import functools
import socket
from types import TracebackType
from typing import Final, Self

from aiohttp import web

HOST: Final = "127.0.0.1"
#: What a server says when a port it was told to bind was taken since the test picked it.
PORT_TAKEN: Final = b"Address already in use"
#: How many times a server that cannot bind port 0 is started on newly picked ports.
PORT_ATTEMPTS: Final = 3
#: In-flight handlers are cancelled before shutdown, so this bound is rarely reached.
SHUTDOWN_TIMEOUT: Final = 1.0


def free_port() -> int:
    """A port nothing listens on right now (bound, then released), for a server to bind.

    Another process may take it before the server does (a client's connection is given such
    ports too): bind port 0 where the server can say which port it got, and retry where it
    cannot. Where a test wants a connection refused, `refused_port()` is the port.
    """
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


class PortTaken(Exception):
    """A server could not bind the port the test picked for it: another process took it first."""


def refused_port() -> int:
    """A port on HOST where every connection is refused, for as long as the tests run.

    This process keeps it bound and never listens on it (Linux answers a connection to such a
    port with a reset), so no other process can take it, as one could take a released port.
    """
    port: int = _refusing_socket().getsockname()[1]
    return port


@functools.cache
def _refusing_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind((HOST, 0))
    atexit.register(sock.close)
    return sock


class LoopbackServer:
    """An aiohttp app served on `host:port` (port 0 picks a free one) for an `async with`.

    A fake builds its app in `make_app()`; `start()` serves it and sets `port` to the real
    port; a fake that holds responses cancels them in its own `close()` before this one.
    """

    def __init__(self, *, host: str = HOST, port: int = 0) -> None:
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def make_app(self) -> web.Application:
        """The app to serve."""
        raise NotImplementedError

    async def start(self) -> None:
        """Listen; `port` holds the real port afterwards."""
        runner = web.AppRunner(
            self.make_app(),
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        self._runner = runner
        await web.TCPSite(runner, self.host, self.port).start()
        self.port = int(runner.addresses[0][1])

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
