"""Bench clients: raw-socket SSE listeners that count events cheaply, and the control calls."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from workload import PHASE_MARK, READY_MARK, TOKEN_MARK, Ask

HOST: Final = "127.0.0.1"
CONNECT_BATCH: Final = 100
READY_TIMEOUT_S: Final = 60.0
_TAIL: Final = max(len(TOKEN_MARK), len(PHASE_MARK), len(READY_MARK)) - 1
_TOKEN_TAIL: Final = len(TOKEN_MARK) - 1


class Listener(asyncio.Protocol):
    """One SSE response read off a raw HTTP/1.1 connection, token events counted as they come.

    Every bench server writes whole events, so chunked-encoding framing never splits a
    marker; a marker split across two reads is found by looking at the joint.
    """

    def __init__(self, path: str, *, capture: bool = False) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.tokens = 0
        self.head = b""
        self.started = time.perf_counter()
        self.first_byte: float | None = None
        self.first_phase: float | None = None
        self.captured: bytearray | None = bytearray() if capture else None
        self.ready = asyncio.Event()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.started = time.perf_counter()
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.first_byte is None:
            self.first_byte = time.perf_counter()
            self.head = data[:64]
        joint = self._tail[-_TOKEN_TAIL:] + data[:_TOKEN_TAIL]
        self.tokens += data.count(TOKEN_MARK) + joint.count(TOKEN_MARK)
        if not self.ready.is_set():
            window = self._tail + data
            if self.first_phase is None and PHASE_MARK in window:
                self.first_phase = time.perf_counter()
            if READY_MARK in window:
                self.ready.set()
        self._tail = data[-_TAIL:] if len(data) >= _TAIL else (self._tail + data)[-_TAIL:]
        if self.captured is not None:
            self.captured += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def ok(self) -> bool:
        """True if the response was a 200."""
        return self.head.startswith(b"HTTP/1.1 200 ")

    def body(self) -> bytes:
        """The captured response body with the chunked framing removed."""
        assert self.captured is not None, "open the listener with capture=True"
        return dechunk(bytes(self.captured))


def dechunk(raw: bytes) -> bytes:
    """A captured HTTP/1.1 response's body with the chunked framing removed."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    body = bytearray()
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += rest[:size]
        rest = rest[size + 2 :]
    return bytes(body)


async def listen(port: int, path: str, *, capture: bool = False) -> Listener:
    """Open one listener on `path`; the request is sent as soon as the connection is made."""
    loop = asyncio.get_running_loop()
    _, listener = await loop.create_connection(lambda: Listener(path, capture=capture), HOST, port)
    return listener


async def listen_many(port: int, path: str, count: int, *, ready: bool) -> list[Listener]:
    """Open `count` listeners in batches; with `ready`, return once all reached the hold point."""
    listeners: list[Listener] = []
    for start in range(0, count, CONNECT_BATCH):
        batch = min(CONNECT_BATCH, count - start)
        opened = await asyncio.gather(*(listen(port, path) for _ in range(batch)))
        listeners.extend(opened)
        if ready:
            try:
                async with asyncio.timeout(READY_TIMEOUT_S):
                    await asyncio.gather(*(listener.ready.wait() for listener in opened))
            except TimeoutError:
                raise RuntimeError(
                    f"{path}: listeners never saw {READY_MARK!r}, where streams are held; "
                    "did the `synthesizing started` event change?"
                ) from None
    return listeners


async def finish(listeners: list[Listener]) -> int:
    """Wait until every listener's stream has ended; the token events they got in total."""
    await asyncio.gather(*(listener.closed for listener in listeners))
    bad = sum(not listener.ok for listener in listeners)
    if bad:
        raise RuntimeError(f"{bad} of {len(listeners)} listeners did not get a 200")
    return sum(listener.tokens for listener in listeners)


@dataclass(frozen=True, slots=True)
class Stats:
    """What a bench server reports about itself."""

    cpu_s: float
    rss_kib: int
    tasks: int
    held: int
    #: The longest the server's event loop was held since the last `reset_lag`.
    lag_max_ms: float = 0.0


class Control:
    """The bench's HTTP calls to one server: create runs, read stats, release held streams."""

    def __init__(self, session: aiohttp.ClientSession, port: int) -> None:
        self.session = session
        self.port = port
        self.base = f"http://{HOST}:{port}"

    async def create_run(self, ask: Ask) -> str:
        """Start a run (research-service) or name a stream (baselines); its events path."""
        payload: dict[str, Any] = {
            "question": ask.question,
            "options": {"breadth": 1, "max_sources": 1},
        }
        async with self.session.post(f"{self.base}/v1/runs", json=payload) as response:
            if response.status != 201:
                raise RuntimeError(f"POST /v1/runs: {response.status} {await response.text()}")
            body = await response.json()
        return str(body["events_url"])

    async def healthz(self) -> None:
        """`GET /healthz`, read whole; RuntimeError unless it answers 200."""
        async with self.session.get(f"{self.base}/healthz") as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET /healthz answered {response.status}")

    async def stats(self, *, gc: bool = False, reset_lag: bool = False) -> Stats:
        """The server's CPU time, RSS (after a full collection with `gc`), tasks, held streams,
        and its longest loop stall (then forgotten, with `reset_lag`)."""
        params = {"gc": "1"} if gc else {}
        if reset_lag:
            params["reset_lag"] = "1"
        async with self.session.get(f"{self.base}/bench/stats", params=params) as response:
            body = await response.json()
        return Stats(
            float(body["cpu_s"]),
            int(body["rss_kib"]),
            body["tasks"],
            body["held"],
            float(body["lag_max_ms"]),
        )

    async def start(self) -> None:
        """Release every held stream (or held run)."""
        async with self.session.post(f"{self.base}/bench/start") as response:
            response.raise_for_status()
