"""One SSE client of one run: bounded catch-up writes in its own task, live events via the hub."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator, Sequence
from typing import Final

from aiohttp import hdrs, web

from research_service.events import Event
from research_service.runs.hub import Hub
from research_service.settings import Settings
from research_service.stats import Stats
from research_service.web.connections import reset

log = logging.getLogger(__name__)

#: A write that cannot drain within the write timeout cuts the listener; bounding each write
#: makes that timeout mean "the socket took no data", not "a large backlog took long".
MAX_WRITE_BYTES: Final = 256 * 1024
#: A catch-up gives the loop a turn after this many bytes: with many listeners catching up at
#: once, everyone else (a new request, a heartbeat) waits at most one such step per listener.
YIELD_BYTES: Final = 64 * 1024
#: Live events that arrive within this long of the previous write are sent together at its
#: end: a fast model then costs one socket write per millisecond, not one per token, and a
#: slow one (a token every few ms or more) is written at once, with no delay at all.
COALESCE_S: Final = 0.001


def batches(events: list[Event]) -> Iterator[list[Event]]:
    """Split pending events into batches of about MAX_WRITE_BYTES each."""
    if len(events) == 1:
        yield events
        return
    batch: list[Event] = []
    size = 0
    for event in events:
        batch.append(event)
        size += len(event.wire)
        if size >= MAX_WRITE_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class DirectWriter:
    """Writes body bytes to a prepared response's socket at once, framed as aiohttp frames its own.

    The hub must never wait, and `StreamResponse.write` may (it drains), so live events skip it.
    That is sound only while aiohttp writes a prepared response's body straight to
    `request.transport`, as one chunk per write when it sets `Transfer-Encoding: chunked`, with
    the headers out after its first body write and no body bytes held back:
    tests/test_listener_framing.py pins each of these against the installed aiohttp.
    """

    __slots__ = ("chunked", "transport")

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        self.transport = request.transport
        self.chunked = response.headers.get(hdrs.TRANSFER_ENCODING) == "chunked"

    def send(self, data: bytes) -> bool:
        """Write `data` (never empty: an empty chunk ends the body) now; False if closed."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        return True


class Listener:
    """Writes one run's events to one client, at the client's own pace.

    Behind on the log, it catches up in its own task with bounded writes under the write
    timeout. Caught up on a live run, it subscribes to the run's hub, which hands it each new
    event as the run appends it; the listener writes it to the socket without waiting, or
    asks the hub to let it go when the socket is backed up. The run's last events, however
    they arrive, wait for `close` and go out with the end of the response, in one write.
    """

    # One per open stream (issue 16's idle memory): no instance dict.
    __slots__ = (
        "_flush_timer",
        "_pending",
        "_pending_at",
        "_pending_bytes",
        "_unyielded",
        "_wakeup",
        "after",
        "direct",
        "finished",
        "gone",
        "heartbeat",
        "hub",
        "last_write",
        "loop",
        "opened",
        "response",
        "stats",
        "transport",
        "write_timeout",
    )

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        settings: Settings,
        stats: Stats | None = None,
    ):
        self.response = response
        self.write_timeout = settings.write_timeout_s
        self.heartbeat = settings.heartbeat_s
        self.loop = asyncio.get_running_loop()
        self.transport = request.transport
        self.direct = DirectWriter(request, response)  # the hub's writes, which never wait
        self.stats = Stats() if stats is None else stats
        self.after = 0
        self.finished = False
        #: The client went away before the run's `done` reached it (not cut: gone).
        self.gone = False
        self.last_write = self.opened = self.loop.time()
        #: The run's live fan-out, once seen: when each event reached it (delivery lag).
        self.hub: Hub | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._pending: list[bytes] | None = None  # live events waiting for the coalesce flush
        self._pending_at: list[float] = []  # when each of them reached the hub
        self._pending_bytes = 0
        self._flush_timer: asyncio.TimerHandle | None = None
        self._unyielded = 0  # bytes written since this listener last gave the loop a turn

    async def write(self, data: bytes) -> bool:
        """Write `data`; False (and the connection is cut) if the client stopped reading."""
        try:
            if self.cannot_wait(data):
                await self.response.write(data)
            else:
                async with asyncio.timeout(self.write_timeout):
                    await self.response.write(data)
        except TimeoutError:
            self._cut_stalled()
            return False
        except (ConnectionError, RuntimeError):
            # The peer went away (aiohttp raises ClientConnectionResetError or, after EOF,
            # RuntimeError); nothing to clean up beyond leaving.
            self.gone = True
            return False
        self.last_write = self.loop.time()
        self._unyielded += len(data)
        if self._unyielded >= YIELD_BYTES:
            # A write to a fast socket does not wait, so a long catch-up would hold the loop
            # for its whole length: let everyone else run between its big writes.
            self._unyielded = 0
            await asyncio.sleep(0)
        return True

    def cannot_wait(self, data: bytes) -> bool:
        """Whether writing `data` now completes without waiting, so it needs no deadline.

        aiohttp's write waits only to drain a transport paused for writing. An empty buffer is
        not paused, and what the socket does not take of `data` at once (with its framing, and
        the headers on the first write) stays under the high-water mark when `data` is at most
        half of it, even if the client reads nothing, so it does not pause it. Skipping the
        deadline matters: a cancelled timer stays in the loop's heap until enough others are
        cancelled, with a copy of the task's context, so each write's deadline cost every idle
        listener about 0.4 KiB until it was purged (issue 16's idle memory), and a catch-up's
        CPU. tests/test_listener_framing.py pins aiohttp's side of this.
        """
        transport = self.transport
        return (
            transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() == 0
            and len(data) <= transport.get_write_buffer_limits()[1] // 2
        )

    async def close(self) -> None:
        """End the response; a client that will not take the rest is cut, not waited for.

        The run's last events, held since the hub handed them over or the log gave them
        (`end_with`), go out with the end of the response: one socket write, where writing
        them first took two (bench/README.md, "The run's end in one write").
        """
        held, published = self._take_pending()
        try:
            if self.cannot_wait(held):  # no deadline needed, as in `write`
                await self.response.write_eof(held)
            else:
                async with asyncio.timeout(self.write_timeout):
                    await self.response.write_eof(held)
        except TimeoutError:
            self._cut_stalled()
        except (ConnectionError, RuntimeError):
            # The client went before the end could be written (a cancel while it drains
            # comes later: the end is in the socket's buffer then, as a written event is).
            if held:
                self._lost_end()
        else:
            if held:
                self._wrote(published)

    def end_with(self, data: bytes, events: list[Event] | None = None) -> None:
        """Hold `data` for `close` to write with the end of the response.

        `data`: the run's last `events`, read from the log (after the stream's first bytes, if
        not written yet), or the first bytes alone when the stream ends before any event.
        """
        self._cancel_flush()
        self._pending, self._pending_at, self._pending_bytes = [data], [], len(data)
        if events:
            self.stats.events_delivered += len(events)
            self._pending_at = self._live(events)
            self.after = events[-1].seq
            self.finished = True

    @property
    def ends_held(self) -> bool:
        """Whether the run's last events wait for `close`: handed over, not yet written."""
        return self.finished and self._pending is not None

    def _lost_end(self) -> None:
        # Its stream's `finally` saw the end handed over; it never reached the client.
        self.gone = True
        self.stats.listeners_dropped += 1

    def quiet_for(self) -> float:
        """Seconds since the last byte was written to this client."""
        return self.loop.time() - self.last_write

    def written(self, events: list[Event]) -> None:
        """Count the delivery lag of the live events among `events`, just written from the log.

        Live: they reached the run's hub after this listener opened its stream (a listener
        released by the hub catches up from the log); older events are catch-up, not lag.
        """
        self._wrote(self._live(events))

    def _live(self, events: list[Event]) -> list[float]:
        """When each live event of `events` reached the run's hub; none for catch-up."""
        hub = self.hub
        if hub is None:
            return []
        last = hub.published_at(events[-1].seq)
        if last is None or last < self.opened:
            return []
        live: list[float] = []
        for event in events:
            published = hub.published_at(event.seq)
            if published is not None and published >= self.opened:
                live.append(published)
        return live

    async def follow(self, hub: Hub) -> None:
        """Take live events from the hub until it lets go or a heartbeat is due."""
        self.hub = hub
        if not hub.subscribe(self):
            return
        self._wakeup = self.loop.create_future()
        timer = self.loop.call_later(self.heartbeat - self.quiet_for(), self.release)
        try:
            await self._wakeup
        finally:
            timer.cancel()
            hub.unsubscribe(self)
            if not self.finished:  # the run's end waits for `close`, to go out with it
                self._flush()  # what the hub handed over goes out before the task writes again
            self._wakeup = None

    # --- called by the hub, from the run's task: must never wait --------------------------

    def deliver(self, event: Event, published: float) -> bool:
        """Take `event` (at the hub since `published`) now; False if the socket is backed up.

        The run's last event is held, with whatever is pending, for `close` to write.
        """
        transport = self.transport
        data = event.wire
        # Never hold more than one bounded write's worth behind the client's back: past
        # that, the listener's own task writes, under the write timeout.
        if (
            transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size() + self._pending_bytes + len(data) > MAX_WRITE_BYTES
        ):
            return False
        self.finished = event.is_final
        self.stats.events_delivered += 1
        if self._pending is not None:
            self._pending.append(data)
            self._pending_at.append(published)
            self._pending_bytes += len(data)
        # Held: the run's end, for `close` to write with the end of the response; or an event
        # within the coalescing interval, written with what follows it when its timer fires.
        elif self.finished or self.loop.time() - self.last_write < COALESCE_S:
            self._pending, self._pending_at, self._pending_bytes = [data], [published], len(data)
            if not self.finished:
                self._flush_timer = self.loop.call_at(self.last_write + COALESCE_S, self._flush)
        elif self.direct.send(data):
            now = self.last_write = self.loop.time()
            self.stats.delivery_lag.observe(now - published)
        if self.finished:
            self._cancel_flush()  # what is pending goes out with the end of the response
        return True

    def deliver_all(self, events: Sequence[Event], published: Sequence[float]) -> bool:
        """Take `events` now, in one write; False if the socket is backed up.

        A hub's round: its turns coalesce a listener's events already, so no timer waits.
        Events that end the run are held for `close` to write, as in `deliver`.
        """
        transport = self.transport
        wires = [event.wire for event in events]
        size = sum(map(len, wires))
        if (
            transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size() + self._pending_bytes + size > MAX_WRITE_BYTES
        ):
            return False
        self.finished = events[-1].is_final
        self.stats.events_delivered += len(wires)
        if self._pending is None:
            self._pending, self._pending_at, self._pending_bytes = wires, list(published), size
        else:
            self._pending += wires
            self._pending_at += published
            self._pending_bytes += size
        if not self.finished:  # the run's end: `close` writes it with the end of the response
            self._flush()
        return True

    def release(self) -> None:
        """Wake this listener's task (the hub let go, or a heartbeat is due)."""
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _cancel_flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _take_pending(self) -> tuple[bytes, list[float]]:
        """What waits to be written, and when each of its live events reached the hub."""
        self._cancel_flush()
        pending, published = self._pending, self._pending_at
        if pending is None:
            return b"", []
        self._pending, self._pending_at, self._pending_bytes = None, [], 0
        return (pending[0] if len(pending) == 1 else b"".join(pending)), published

    def _flush(self) -> None:
        data, published = self._take_pending()
        if data and self.direct.send(data):
            self._wrote(published)

    def _wrote(self, published: Iterable[float]) -> None:
        """Bytes just went out: note when, and the lag of the live events they carried.

        `published`: when each of those events reached the hub.
        """
        now = self.last_write = self.loop.time()
        lag = self.stats.delivery_lag
        for at in published:
            lag.observe(now - at)

    def cut(self) -> None:
        """End the stream without its end, as a dropped connection does: the client resumes."""
        self._abort()

    def _cut_stalled(self) -> None:
        log.info("cut a listener that took no data for %g s", self.write_timeout)
        self.stats.listeners_cut += 1
        self._abort()

    def _abort(self) -> None:
        # A reset, so the client sees the cut and the kernel frees the backed-up buffers.
        reset(self.transport)
