"""A client that stops reading an answer loses its connection; it holds nothing for long.

Not only listeners (cut by their stream after --write-timeout-s): any answer. A client that
asks for `/openapi.json` (146 KiB) twenty times on one connection and reads nothing held the
connection, its slot under --max-connections and the buffered answer for as long as it liked;
a few thousand such connections took every slot. Against a real `serve` process.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.served import CORPUS, Served, start, stop

WRITE_TIMEOUT_S = 0.5
#: How long the test waits for the reset (the service resets after twice the write timeout).
WAIT_S = 20.0


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    service = await start(
        *("--port", "0", "--data-dir", str(tmp_path / "data")),
        *("--corpus", str(CORPUS), "--write-timeout-s", str(WRITE_TIMEOUT_S)),
    )
    yield service
    if service.process.returncode is None:
        assert await stop(service) == 0


def not_reading(port: int, request: bytes) -> socket.socket:
    """A connection that sends `request` and then reads nothing (a tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    sock.sendall(request)
    return sock


def reset_by_peer(sock: socket.socket) -> bool:
    """Whether the service reset `sock` (reading what it had sent, until the reset)."""
    sock.settimeout(WAIT_S)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        return True
    return False


async def test_a_client_that_reads_none_of_its_answers_is_reset(served: Served) -> None:
    before = len(served.log)
    ask = b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 20
    stuck = [not_reading(served.port, ask) for _ in range(3)]
    try:
        for _ in stuck:
            await served.wait_log(
                rb"reset a connection whose client took none of its answer for 1 s\n",
                since=before,
                timeout=WAIT_S,
            )
            before = served.log.index(b"reset a connection", before) + 1
        assert all([await asyncio.to_thread(reset_by_peer, sock) for sock in stuck])
    finally:
        for sock in stuck:
            sock.close()
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{served.base}/healthz")).status_code == 200
    assert "Traceback" not in served.log.decode()
