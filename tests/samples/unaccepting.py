"""A model server address that answers the start-up check once, then never accepts again.

Its listening socket has a backlog of one, which a connection nobody accepts fills after the
check: from then on a connection attempt is neither accepted nor refused, so it hangs until
the client's connect timeout, as behind a firewall that drops packets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from types import TracebackType
from typing import Final

from tests.fake_openai import DEFAULT_MODEL

HOST: Final = "127.0.0.1"
MODELS: Final = {
    "object": "list",
    "data": [{"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "fake"}],
}


class Unaccepting:
    """`async with Unaccepting() as port:` serve `GET /v1/models` once at `port.base_url`."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._queued = socket.socket()
        self._answered: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    async def __aenter__(self) -> Unaccepting:
        self._listener.bind((HOST, 0))
        self._listener.listen(0)
        self._listener.setblocking(False)
        self._answered = asyncio.create_task(self._answer_the_check())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._answered is not None:
            self._answered.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._answered
        self._queued.close()
        self._listener.close()

    async def _answer_the_check(self) -> None:
        loop = asyncio.get_running_loop()
        connection, _ = await loop.sock_accept(self._listener)
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await loop.sock_recv(connection, 65536)
            body = json.dumps(MODELS).encode()
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            await loop.sock_sendall(connection, head.encode() + body)
        # The one place in the backlog, taken for good: later connections hang.
        self._queued.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            self._queued.connect((HOST, self.port))
