"""What the tests' loopback servers share: a free port, and serving an aiohttp app on 127.0.0.1."""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Final, Self

from aiohttp import web

HOST: Final = "127.0.0.1"
#: In-flight handlers are cancelled before shutdown, so this bound is rarely reached.
SHUTDOWN_TIMEOUT: Final = 1.0


def free_port() -> int:
    """A port nothing listens on right now (bound, then released), so connecting is refused."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


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
