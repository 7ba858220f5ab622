"""A loopback TCP proxy that can cut every connection through it, as a failing network would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

CHUNK = 65536


class DropProxy:
    """Forwards 127.0.0.1:<port> to a target; `drop_all()` cuts every open connection at once.

    Clients see the server end the response mid-stream (what a restarting proxy or a lost
    network does) and reconnect through the same port, which keeps forwarding.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0  # connections accepted so far
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._changed = asyncio.Condition()
        #: Cleared: no byte goes through either way, old connections or new (a network gone
        #: silent, as a blackholed route or a stalled peer is: nothing refused, nothing said).
        self._flowing = asyncio.Event()
        self._flowing.set()
        #: A connection whose client sends these bytes has the target's answers held from
        #: then on (lost for the client, as when a connection dies after the server acted on
        #: the request), until `speak`.
        self._hold_after: bytes | None = None
        self._held: list[asyncio.Event] = []

    def go_silent(self) -> None:
        """Pass nothing on from now on, until `speak`."""
        self._flowing.clear()

    def hold_answers_after(self, request: bytes) -> None:
        """On the connection that next sends `request`, hold the target's answers to what it
        sends after that (a PostgreSQL statement's execution, once it is prepared)."""
        self._hold_after = request

    def speak(self) -> None:
        """Pass bytes on again, both ways, on every connection."""
        self._hold_after = None
        self._flowing.set()
        for answering in self._held:
            answering.set()
        self._held.clear()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def wait_accepted(self, count: int, timeout: float = 10.0) -> None:
        """Wait until `count` connections have been accepted in all."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.accepted >= count)

    async def drop_all(self) -> int:
        """Abort every open connection (both sides); return how many client sides were cut."""
        writers = list(self._writers)
        for writer in writers:
            writer.transport.abort()
        tasks = list(self._open)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return len(tasks)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self.drop_all()
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        self._writers.add(writer)
        async with self._changed:
            self.accepted += 1
            self._changed.notify_all()
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(*self.target)
            self._writers.add(upstream)
            answering = asyncio.Event()
            answering.set()
            armed = False

            def sent(data: bytes) -> None:
                # The statement's text goes with its preparation; its execution is what the
                # client sends next (PostgreSQL's extended protocol): answers held from then.
                nonlocal armed
                if armed:
                    armed = False
                    answering.clear()
                    self._held.append(answering)
                elif self._hold_after is not None and self._hold_after in data:
                    self._hold_after = None
                    armed = True

            await asyncio.gather(
                _pipe(reader, upstream, self._flowing, seen=sent),
                _pipe(up_reader, writer, self._flowing, answering),
            )
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for side in (writer, upstream):
                if side is not None:
                    self._writers.discard(side)
                    side.transport.abort()
            self._open.discard(task)


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *gates: asyncio.Event,
    seen: Callable[[bytes], None] | None = None,
) -> None:
    """Copy bytes until EOF (holding them while any gate is clear), then half-close."""
    while data := await reader.read(CHUNK):
        for gate in gates:
            await gate.wait()
        writer.write(data)
        if seen is not None:
            seen(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()
