"""The SSE listener: replay a run's log after a position, then follow it live."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Final

from aiohttp import web

from research_service.errors import InvalidEventId
from research_service.events import PING, Event, parse_event_id, retry_field
from research_service.runs.hub import Hub
from research_service.runs.log import EventLog
from research_service.settings import Settings
from research_service.web.keys import MANAGER, SETTINGS

log = logging.getLogger(__name__)

LAST_EVENT_ID_HEADER: Final = "Last-Event-ID"
LAST_EVENT_ID_PARAM: Final = "last_event_id"
#: A write that cannot drain within the write timeout cuts the listener; bounding each write
#: makes that timeout mean "the socket took no data", not "a large backlog took long".
MAX_WRITE_BYTES: Final = 256 * 1024
STREAM_HEADERS: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}


def requested_position(request: web.Request) -> str | None:
    """The raw Last-Event-ID, from the header or (for clients that cannot set it) the query."""
    value = request.headers.get(LAST_EVENT_ID_HEADER)
    if value is None or not value.strip():
        value = request.query.get(LAST_EVENT_ID_PARAM)
    return value if value and value.strip() else None


def split_event_id(raw: str) -> tuple[str, int]:
    """The run id and seq of a Last-Event-ID; InvalidEventId when it is malformed."""
    parsed = parse_event_id(raw)
    if parsed is None:
        raise InvalidEventId(
            f"Last-Event-ID {raw!r} is malformed; it must be an event id `<run_id>:<seq>` "
            "from this run's stream",
            field=LAST_EVENT_ID_HEADER,
        )
    return parsed


async def resume_position(raw: str | None, *, run_id: str, log: EventLog) -> tuple[int, bool]:
    """The seq a listener has already seen, and whether that event was the run's `done`."""
    if raw is None:
        return 0, False
    owner, seq = split_event_id(raw)
    if owner != run_id:
        raise InvalidEventId(
            f"Last-Event-ID {raw!r} belongs to run {owner}, not {run_id}",
            field=LAST_EVENT_ID_HEADER,
        )
    if seq == 0:
        return 0, False
    tail = await log.read(run_id, after=seq - 1, limit=1)
    if not tail:
        raise InvalidEventId(
            f"Last-Event-ID {raw!r} was never issued by run {run_id}",
            field=LAST_EVENT_ID_HEADER,
        )
    return seq, tail[0].is_final


def _batches(events: list[Event]) -> Iterator[list[Event]]:
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


class _Listener:
    """Writes one run's events to one client, at the client's own pace.

    Behind on the log, it catches up in its own task with bounded writes; once caught up on
    a live run it subscribes to the run's hub, which hands it each new event directly.
    """

    def __init__(self, request: web.Request, response: web.StreamResponse, settings: Settings):
        self.request = request
        self.response = response
        self.write_timeout = settings.write_timeout_s
        self.heartbeat = settings.heartbeat_s
        self.loop = asyncio.get_running_loop()
        self.transport = request.transport
        # aiohttp frames chunks itself on its own writes; the hub's direct writes must match.
        self.chunked = response.headers.get("Transfer-Encoding") == "chunked"
        self.after = 0
        self.finished = False
        self.last_write = self.loop.time()
        self._wakeup: asyncio.Future[None] | None = None

    async def write(self, data: bytes) -> bool:
        """Write `data`; False (and the connection is cut) if the client stopped reading."""
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.response.write(data)
        except TimeoutError:
            log.info("cut a listener that took no data for %g s", self.write_timeout)
            if self.transport is not None:
                self.transport.abort()
            return False
        except (ConnectionError, RuntimeError):
            # The peer went away (aiohttp raises ClientConnectionResetError or, after EOF,
            # RuntimeError); nothing to clean up beyond leaving.
            return False
        self.last_write = self.loop.time()
        return True

    async def close(self) -> None:
        """End the response; a client that will not take the rest is cut, not waited for."""
        try:
            async with asyncio.timeout(self.write_timeout):
                await self.response.write_eof()
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()
        except (ConnectionError, RuntimeError):
            pass

    def deliver(self, event: Event) -> bool:
        """Hub side: write `event` without waiting, unless the socket is backed up or closed."""
        transport = self.transport
        data = event.wire
        # Never buffer more than one bounded write's worth behind the client's back: past
        # that, the listener's own task writes, under the write timeout.
        if (
            transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size() + len(data) > MAX_WRITE_BYTES
        ):
            return False
        transport.write(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
        self.last_write = self.loop.time()
        self.finished = event.is_final
        return True

    def release(self) -> None:
        """Hub side: wake this listener's task."""
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def quiet_for(self) -> float:
        """Seconds since the last byte was written to this client."""
        return self.loop.time() - self.last_write

    async def follow(self, hub: Hub) -> None:
        """Take events from the hub until released or a heartbeat is due."""
        if not hub.subscribe(self):
            return
        self._wakeup = self.loop.create_future()
        timer = self.loop.call_later(self.heartbeat - self.quiet_for(), self.release)
        try:
            await self._wakeup
        finally:
            timer.cancel()
            hub.unsubscribe(self)
            self._wakeup = None


async def stream(
    request: web.Request, *, run_id: str, after: int, ended: bool
) -> web.StreamResponse:
    """Serve a run's events after seq `after`, following the run until its `done`."""
    manager = request.app[MANAGER]
    settings = request.app[SETTINGS]
    events_log = manager.log
    if ended:
        # The listener has everything: 204 makes a browser's EventSource stop reconnecting.
        return web.Response(status=204)
    response = web.StreamResponse(status=200, headers=STREAM_HEADERS)
    await response.prepare(request)
    listener = _Listener(request, response, settings)
    listener.after = after
    manager.listener_joined(run_id)
    try:
        # Also flushes the headers, so the hub's direct writes always come after them.
        if not await listener.write(retry_field(settings.retry_ms)):
            return response
        while not listener.finished:
            events = await events_log.read(run_id, after=listener.after)
            if events:
                # Events are encoded once at append time; what is pending goes out in as few
                # writes as possible, each small enough that "no progress" is detectable.
                for batch in _batches(events):
                    if not await listener.write(b"".join(e.wire for e in batch)):
                        return response
                listener.after = events[-1].seq
                listener.finished = events[-1].is_final
                continue
            due = settings.heartbeat_s - listener.quiet_for()
            if due > 0:
                hub = manager.hub(run_id)
                if hub is not None:
                    await listener.follow(hub)
                else:
                    await events_log.wait(run_id, after=listener.after, timeout=due)
            elif not await listener.write(PING):
                return response
    finally:
        manager.listener_left(run_id)
    await listener.close()
    return response
