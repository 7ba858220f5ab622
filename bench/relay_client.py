"""A raw-socket SSE listener that stamps every byte it reads, and the latency it works out."""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from collections.abc import Callable
from typing import Final
from urllib.parse import urlencode

from workload import READY_MARK, TOKEN_MARK

HOST: Final = "127.0.0.1"
#: Seen once the model's stream has ended (the synthesis window closes).
SYNTH_DONE_MARK: Final = b'"phase":"synthesizing","status":"completed"'
DONE_MARK: Final = b"\nevent: done\n"
ERROR_MARK: Final = b"\nevent: error\n"
DATA_PREFIX: Final = b"data: "


class StampedListener(asyncio.Protocol):
    """One `GET /v1/research` stream read off a raw HTTP/1.1 connection, every read stamped.

    `on_start` runs when `synthesizing started` arrives and `on_end` when `synthesizing
    completed` does, inside the read that brought them, so a CPU sample taken there brackets
    the synthesis window as closely as the client can see it.
    """

    def __init__(
        self, path: str, *, on_start: Callable[[], None], on_end: Callable[[], None]
    ) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.raw = bytearray()
        #: (bytes received so far, time.monotonic()) after each read.
        self.reads: list[tuple[int, float]] = []
        self.on_start: Callable[[], None] | None = on_start
        self.on_end: Callable[[], None] | None = on_end
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        seen = len(self.raw)
        self.raw += data
        self.reads.append((len(self.raw), now))
        if self.on_start is None and self.on_end is None:
            return
        window = bytes(self.raw[max(0, seen - len(SYNTH_DONE_MARK)) :])
        if self.on_start is not None and READY_MARK in window:
            self.on_start()
            self.on_start = None
        if self.on_start is None and self.on_end is not None and SYNTH_DONE_MARK in window:
            self.on_end()
            self.on_end = None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def check(self) -> None:
        """Raise unless the response was a 200 that ended with `done` and no `error`."""
        head = bytes(self.raw[:64])
        if not head.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"research-service answered {head!r}")
        if ERROR_MARK in self.raw or DONE_MARK not in self.raw:
            tail = bytes(self.raw[-2000:]).decode(errors="replace")
            raise RuntimeError(f"the run did not complete cleanly: ...{tail}")

    def tokens(self) -> list[tuple[str, float]]:
        """Each `token` event's text and the time of the read that completed it, in order.

        Every event sits whole inside one chunk of the chunked body, so an event's bytes,
        from its `event:` line to the blank line after its `data:` line, are contiguous here.
        """
        raw = bytes(self.raw)
        ends = [end for end, _ in self.reads]
        found: list[tuple[str, float]] = []
        at = raw.find(TOKEN_MARK)
        while at >= 0:
            data_at = at + len(TOKEN_MARK)
            line_end = raw.index(b"\n", data_at)
            if not raw.startswith(DATA_PREFIX, data_at):
                raise RuntimeError(f"a token event without a data line at byte {data_at}")
            text = json.loads(raw[data_at + len(DATA_PREFIX) : line_end])["text"]
            # The event is complete once its blank line (line_end + 1) has been read.
            arrived = self.reads[bisect.bisect_left(ends, line_end + 2)][1]
            found.append((text, arrived))
            at = raw.find(TOKEN_MARK, line_end)
        return found


async def research(
    port: int,
    question: str,
    *,
    options: dict[str, int],
    on_start: Callable[[], None],
    on_end: Callable[[], None],
) -> StampedListener:
    """Open `GET /v1/research?q=…`: the run is created and streamed on this one connection."""
    path = "/v1/research?" + urlencode({"q": question, **options})
    loop = asyncio.get_running_loop()
    _, listener = await loop.create_connection(
        lambda: StampedListener(path, on_start=on_start, on_end=on_end), HOST, port
    )
    return listener


def added_latency_ms(
    tokens: list[tuple[str, float]], pieces: list[str], sent_at: list[float]
) -> list[float]:
    """Per token: receipt time minus the fake's write time of the matching piece, in ms.

    Pieces map 1:1 to token events, in order; anything else is an error, not a guess.
    """
    texts = [text for text, _ in tokens]
    if len(sent_at) != len(pieces) or texts != pieces:
        first_diff = next(
            (i for i, (a, b) in enumerate(zip(texts, pieces, strict=False)) if a != b),
            min(len(texts), len(pieces)),
        )
        raise RuntimeError(
            f"{len(texts)} token events for {len(pieces)} pieces ({len(sent_at)} stamped); "
            f"first difference at {first_diff}: the relay merged or split pieces"
        )
    return [(arrived - sent) * 1e3 for (_, arrived), sent in zip(tokens, sent_at, strict=True)]
