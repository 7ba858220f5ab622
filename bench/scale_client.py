"""The scale bench's client side: timed POSTs, raw-socket SSE recorders, recordings, /metrics.

Everything the client stamps is `time.monotonic()` (CLOCK_MONOTONIC, system-wide on Linux), so
its stamps and the servers' are on one clock; a server's `created_at` (wall clock) is moved onto
it with `wall_offset()`.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

HOST: Final = "127.0.0.1"
#: Downloads of recordings in flight at once (after the measured window).
FETCH_CONCURRENCY: Final = 16
#: The client's own loop-lag probe: how often it wakes.
PROBE_PERIOD_S: Final = 0.005


def wall_offset() -> float:
    """`time.time() - time.monotonic()`, read where the two reads are closest together."""
    best: tuple[float, float] | None = None
    for _ in range(20):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        if best is None or after - before < best[0]:
            best = (after - before, wall - (before + after) / 2)
    assert best is not None
    return best[1]


def parse_iso(text: str) -> float:
    """An RFC 3339 time (`…Z`) as a Unix time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True, slots=True)
class Posted:
    """One `POST /v1/runs`: its answer and when it was sent and answered (monotonic s)."""

    run_id: str
    events_url: str
    created_at: float  # Unix time, as the server said (milliseconds, truncated)
    sent: float
    answered: float


class Poster(asyncio.Protocol):
    """One `POST /v1/runs` on its own raw connection, opened before it is sent.

    Connecting ahead and writing prepared bytes keeps the client's own work out of the
    latency: the clock runs from the write to the read that completes the answer.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        #: Called with the answer the moment it is read (the bench opens the run's stream).
        self.on_answer: Callable[[Posted], None] | None = None
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0
        self.buffer = bytearray()
        self.answer: asyncio.Future[Posted] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, body: dict[str, Any]) -> None:
        """Write the request now."""
        assert self.transport is not None
        payload = json.dumps(body).encode()
        head = (
            f"POST /v1/runs HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.sent = time.monotonic()
        self.transport.write(head.encode() + payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0 or self.answer.done():
            return
        length = _content_length(bytes(self.buffer[:head_end]))
        if length is not None and len(self.buffer) >= head_end + 4 + length:
            self._answered(time.monotonic())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self._answered(time.monotonic())

    def _answered(self, at: float) -> None:
        head, _, body = bytes(self.buffer).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 201 "):
            status = head.split(b"\r\n", 1)[0].decode(errors="replace")
            self.answer.set_exception(RuntimeError(f"POST /v1/runs: {status} {body[:200]!r}"))
            return
        answer = json.loads(body)
        posted = Posted(
            str(answer["id"]),
            str(answer["events_url"]),
            parse_iso(answer["created_at"]),
            self.sent,
            at,
        )
        if self.on_answer is not None:
            self.on_answer(posted)
        self.answer.set_result(posted)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


async def connect_posters(port: int, count: int) -> list[Poster]:
    """`count` connections, each ready to send one POST."""
    loop = asyncio.get_running_loop()
    opened = await asyncio.gather(
        *(loop.create_connection(lambda: Poster(port), HOST, port) for _ in range(count))
    )
    return [poster for _, poster in opened]


@dataclass(frozen=True, slots=True)
class Received:
    """One event as a listener read it."""

    seq: int
    name: str
    at: float  # monotonic s: the read that completed the event
    first_read: bool  # came in the listener's first read with events (the catch-up)
    status: str | None  # a `done` event's status


class Recorder(asyncio.Protocol):
    """One SSE response on a raw HTTP/1.1 connection; every read kept with its arrival time.

    Connected ahead, like a `Poster`: `get` only writes the request. The reads are only stamped
    and kept; they are parsed once the stream has ended, so the client spends as little as it
    can while the servers are measured.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reads: list[tuple[float, bytes]] = []
        loop = asyncio.get_running_loop()
        #: Set by the response's first bytes (or the connection's end): the stream is open.
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get(self, path: str) -> None:
        """Ask for the stream at `path` now."""
        assert self.transport is not None
        self.transport.write(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n"
            "Connection: close\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.reads.append((time.monotonic(), data))
        if not self.opened.done():
            self.opened.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.opened, self.closed):
            if not future.done():
                future.set_result(None)

    @property
    def head_at(self) -> float:
        """When the response's first bytes came: the listener was attached by then."""
        return self.reads[0][0] if self.reads else float("nan")

    def events(self) -> list[Received]:
        """The stream's events; empty unless the response was a 200."""
        raw = b"".join(data for _, data in self.reads)
        if not raw.startswith(b"HTTP/1.1 200 "):
            return []
        read_ends = []
        total = 0
        for _, data in self.reads:
            total += len(data)
            read_ends.append(total)
        body, segments = _dechunk(raw)
        starts = [body_offset for body_offset, _ in segments]
        found: list[Received] = []
        first_read: int | None = None
        start = 0
        while (end := body.find(b"\n\n", start)) >= 0:
            block = bytes(body[start:end])
            start = end + 2
            event = _event(block)
            if event is None:
                continue
            # The read that holds the event's last byte is when the whole event had arrived.
            last_byte = _raw_offset(segments, starts, end + 1)
            read = min(bisect.bisect_right(read_ends, last_byte), len(read_ends) - 1)
            if first_read is None:
                first_read = read
            seq, name, status = event
            found.append(Received(seq, name, self.reads[read][0], read == first_read, status))
        return found


def _dechunk(raw: bytes) -> tuple[bytearray, list[tuple[int, int]]]:
    """The body of a chunked response, and (body offset, raw offset) where each chunk starts."""
    pos = raw.index(b"\r\n\r\n") + 4
    body = bytearray()
    segments: list[tuple[int, int]] = []
    while (line_end := raw.find(b"\r\n", pos)) >= 0:
        size = int(raw[pos:line_end].split(b";")[0] or b"0", 16)
        if size == 0:
            break
        start = line_end + 2
        segments.append((len(body), start))
        body += raw[start : start + size]
        pos = start + size + 2
    return body, segments


def _raw_offset(segments: list[tuple[int, int]], starts: list[int], body_offset: int) -> int:
    """Where a body offset is in the raw bytes (`starts`: each chunk's body offset)."""
    index = bisect.bisect_right(starts, body_offset) - 1
    chunk_body, chunk_raw = segments[max(index, 0)]
    return chunk_raw + body_offset - chunk_body


def _event(block: bytes) -> tuple[int, str, str | None] | None:
    """(seq, name, done status) of one SSE event block; None for a comment or `retry:`."""
    seq, name, data = None, None, b""
    for line in block.split(b"\n"):
        if line.startswith(b"id: "):
            seq = int(line.rpartition(b":")[2])
        elif line.startswith(b"event: "):
            name = line[7:].decode()
        elif line.startswith(b"data: "):
            data = line[6:]
    if seq is None or name is None:
        return None
    status = str(json.loads(data)["status"]) if name == "done" else None
    return seq, name, status


async def connect_recorders(port: int, count: int) -> list[Recorder]:
    """`count` connections, each ready to ask for one stream."""
    loop = asyncio.get_running_loop()
    opened = await asyncio.gather(
        *(loop.create_connection(Recorder, HOST, port) for _ in range(count))
    )
    return [recorder for _, recorder in opened]


@dataclass(frozen=True, slots=True)
class Recording:
    """A finished run's recording: each event's `t_ms`, and `done`'s timings."""

    created_at: float  # Unix time
    t_ms: dict[int, int]  # by seq
    status: str
    timings_ms: dict[str, int]
    text: str  # as downloaded (the baseline plays it)
    #: The queries the run searched, as its `searching` `progress` events name them.
    queries: tuple[str, ...] = ()


async def fetch_recording(
    session: aiohttp.ClientSession, base: str, run_id: str
) -> Recording | None:
    """`GET /v1/runs/{id}/recording`, parsed; None while the run has not ended (a listener
    that was cut before its `done` leaves one so)."""
    async with session.get(f"{base}/v1/runs/{run_id}/recording") as response:
        text = await response.text()
        if response.status == 409:
            return None
        if response.status != 200:
            raise RuntimeError(f"recording of {run_id}: {response.status} {text[:200]}")
    lines = [json.loads(line) for line in text.splitlines() if line]
    header, events = lines[0], lines[1:]
    done = events[-1]
    return Recording(
        parse_iso(header["created_at"]),
        {int(e["seq"]): int(e["t_ms"]) for e in events},
        str(done["data"]["status"]),
        {k: int(v) for k, v in done["data"].get("timings_ms", {}).items()},
        text,
        searched(events),
    )


def searched(events: list[dict[str, Any]]) -> tuple[str, ...]:
    """The queries of a recording's events: each `searching` `progress` event that has one."""
    return tuple(
        str(data["query"])
        for data in (event.get("data") for event in events)
        if isinstance(data, dict)
        and data.get("phase") == "searching"
        and data.get("status") == "progress"
        and "query" in data
    )


async def fetch_recordings(
    session: aiohttp.ClientSession, base: str, run_ids: list[str]
) -> list[Recording | None]:
    """Every run's recording, a few downloads at a time."""
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def one(run_id: str) -> Recording | None:
        async with gate:
            return await fetch_recording(session, base, run_id)

    return await asyncio.gather(*(one(run_id) for run_id in run_ids))


#: The service's loop-lag metrics: a max-stall gauge, or else the sampled histogram.
LAG_GAUGE: Final = "research_event_loop_lag_max_seconds"
LAG_HISTOGRAM: Final = "research_event_loop_lag_seconds"
DELIVERY_HISTOGRAM: Final = "research_event_delivery_lag_seconds"


@dataclass(frozen=True, slots=True)
class Scrape:
    """What the bench reads from one `GET /metrics`."""

    gauges: dict[str, float]
    #: Per histogram: (upper bound, cumulative count), `inf` last.
    histograms: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


async def scrape(session: aiohttp.ClientSession, base: str) -> Scrape:
    """`GET /metrics`, parsed."""
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
        if response.status != 200:
            raise RuntimeError(f"GET /metrics: {response.status} {text[:200]}")
    return parse_scrape(text)


def parse_scrape(text: str) -> Scrape:
    """The loop-lag gauge if there is one, and the lag histograms, from Prometheus text."""
    gauges: dict[str, float] = {}
    histograms: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name == LAG_GAUGE:
            gauges[family.name] = max(sample.value for sample in family.samples)
        elif family.name in (LAG_HISTOGRAM, DELIVERY_HISTOGRAM):
            buckets = [
                (float(s.labels["le"]), s.value)
                for s in family.samples
                if s.name.endswith("_bucket")
            ]
            histograms[family.name] = sorted(buckets)
    return Scrape(gauges, histograms)


def histogram_delta(before: Scrape, after: Scrape, name: str) -> list[tuple[float, float]] | None:
    """A histogram's observations between two scrapes, per bucket (not cumulative)."""
    if name not in after.histograms:
        return None
    old = dict(before.histograms.get(name, []))
    cumulative = [(bound, count - old.get(bound, 0.0)) for bound, count in after.histograms[name]]
    deltas, previous = [], 0.0
    for bound, count in cumulative:
        deltas.append((bound, count - previous))
        previous = count
    return deltas


class LoopProbe:
    """The client's own loop lag: how late a 5 ms timer fires (its receive stamps are that late)."""

    def __init__(self) -> None:
        self.max_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + PROBE_PERIOD_S
            await asyncio.sleep(PROBE_PERIOD_S)
            self.max_s = max(self.max_s, loop.time() - due)

    def start(self) -> None:
        """Measure from now, from zero."""
        self.max_s = 0.0
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> float:
        """Stop measuring; the longest stall seen (s)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        return self.max_s
