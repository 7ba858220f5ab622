"""A run's event stream endpoint: resume positions, catch up from the log, then follow live."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from aiohttp import HttpVersion11, web

from research_service.errors import InvalidEventId
from research_service.events import CRASH_ENDINGS, PING, Event, parse_event_id, retry_field
from research_service.runs.log import EventLog
from research_service.runs.models import RunTail
from research_service.settings_fields import quoted
from research_service.web.keys import MANAGER, SETTINGS
from research_service.web.listener import Listener, batches

log = logging.getLogger(__name__)

#: Events read from the log per step of a listener's catch-up.
CATCH_UP_EVENTS: Final = 512
LAST_EVENT_ID_HEADER: Final = "Last-Event-ID"
#: How long a resume from an event this process has not seen yet waits for it to arrive.
RESUME_WAIT_S: Final = 2.0
LAST_EVENT_ID_PARAM: Final = "last_event_id"
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
            f"Last-Event-ID {quoted(raw)} is malformed; it must be an event id `<run_id>:<seq>` "
            "from this run's stream",
            field=LAST_EVENT_ID_HEADER,
        )
    return parsed


async def _tail(log: EventLog, run_id: str) -> RunTail | None:
    return (await log.tails([run_id])).get(run_id)


async def _wait_for(log: EventLog, run_id: str, seq: int) -> list[Event]:
    """Event `seq` of a running run, once stored within RESUME_WAIT_S; else []."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RESUME_WAIT_S
    tail: list[Event] = []
    while not tail and (remaining := deadline - loop.time()) > 0:
        woke = await log.wait(run_id, after=seq - 1, timeout=remaining)
        tail = await log.read(run_id, after=seq - 1, limit=1)
        if not woke and not tail and not await _running(log, run_id):
            break  # an earlier event was the run's last
    return tail


async def _running(log: EventLog, run_id: str) -> bool:
    tail = await _tail(log, run_id)
    return tail is not None and tail.end is None


def _ends_after_a_crash(event: Event) -> bool:
    return event.name == "error" and event.data.get("code") in CRASH_ENDINGS


async def _stored_before_a_crash(log: EventLog, run_id: str) -> int | None:
    """The last seq stored before the ending of a run ended after a crash; None for others.

    Such an ending (`error` `interrupted` or `worker_lost`, then `done`) is written by another
    process after the one running the run stopped. Events reach listeners before the store,
    so a listener may have seen events past the stored ones that the crash lost: the ending
    took their seqs.
    """
    tail = await _tail(log, run_id)
    if tail is None or tail.end is None or tail.end.error_code not in CRASH_ENDINGS:
        return None
    return tail.event_count - 2


async def _cut_past_the_end(events_log: EventLog, run_id: str, listener: Listener) -> bool:
    """Cut the listener if the run has ended with no more events than it has seen.

    It has not seen the `done` (it would have stopped), so it has events the run's stored log
    does not: ones lost with a process that died, whose seqs the ending took (a cluster node
    that followed the run live, then lost the live window). Cut, it resumes, and the crash
    rule sends it the ending (resume_position; docs/protocol.md, "After a crash").
    """
    tail = await _tail(events_log, run_id)
    if tail is None or tail.end is None or listener.after < tail.event_count:
        return False
    log.info("run %s: a listener past its stored end (event %d) resumes", run_id, listener.after)
    listener.cut()
    return True


async def resume_position(
    raw: str | None, *, run_id: str, log: EventLog, elsewhere: bool = False
) -> tuple[int, bool]:
    """The seq a listener has already seen, and whether that event was the run's `done`.

    `elsewhere`: the run executes in another process (a cluster node), whose events may
    reach this one late: while the database lags (its commits stalled) and the live window
    is lost (a Redis restart), for as long as that lasts. A resume from an event not here
    yet of such a run that goes on is taken at its word; the stream sends what comes after
    it, and if the run ends without reaching it, cuts the stream (`_cut_past_the_end`), so
    the reconnect is answered by the ending or `400`, as for a run that has ended.
    """
    if raw is None:
        return 0, False
    owner, seq = split_event_id(raw)
    if owner != run_id:
        raise InvalidEventId(
            f"Last-Event-ID {quoted(raw)} belongs to run {owner}, not {run_id}",
            field=LAST_EVENT_ID_HEADER,
        )
    if seq == 0:
        return 0, False
    tail = await log.read(run_id, after=seq - 1, limit=1)
    # In a cluster the event may be on its way to this node still, and a replay may not have
    # played it yet: wait for it a little, through the events that come before it.
    if not tail and await _running(log, run_id):
        tail = await _wait_for(log, run_id, seq)
    if not tail or _ends_after_a_crash(tail[0]):
        # Past the stored log of a run ended after a crash, or at its ending's `error`: the
        # listener may have seen events lost with the process, numbered as the ending is. It
        # is sent the ending (docs/protocol.md, "After a crash"). At the ending's `done`, as
        # for any `done`, it is sent nothing more.
        stored = await _stored_before_a_crash(log, run_id)
        if stored is not None and seq > stored:
            return stored, False
    if not tail and elsewhere and await _running(log, run_id):
        return seq, False  # on its way still (see above)
    if not tail:
        raise InvalidEventId(
            f"Last-Event-ID {quoted(raw)} was never issued by run {run_id}",
            field=LAST_EVENT_ID_HEADER,
        )
    return seq, tail[0].is_final


async def _write_page(listener: Listener, events: list[Event], opening: bytes) -> bool:
    """Write a page of stored events to the listener; False when its client is gone.

    `opening`: the stream's first bytes, if not written yet, written before the page.

    A function of its own so that nothing of the page outlives it: a listener waits for the
    next event in `stream`'s frame, which would otherwise keep the page's last batch (up to
    CATCH_UP_EVENTS events) for as long as the stream stays open.
    """
    # Events are encoded once at append time; what is pending goes out in as few writes as
    # possible, each small enough that "no progress" is detectable (and the listener yields
    # the loop between them; see Listener.write).
    for batch in batches(events):
        data, opening = opening + b"".join(e.wire for e in batch), b""
        if batch[-1].is_final:
            listener.end_with(data, batch)  # written with the end of the response, at once
            return True
        if not await listener.write(data):
            return False
        listener.stats.events_delivered += len(batch)
        listener.written(batch)
    listener.after = events[-1].seq
    listener.finished = events[-1].is_final
    return True


async def _await_more(request: web.Request, run_id: str, listener: Listener) -> bool:
    """Wait for the run's next events, or write a heartbeat once one is due.

    Live from the run's hub, or in the log. False when the stream must end now: it was cut,
    or its client is gone.
    """
    manager = request.app[MANAGER]
    due = request.app[SETTINGS].heartbeat_s - listener.quiet_for()
    if due <= 0:
        return await listener.write(PING)
    hub = manager.hub(run_id)
    # (A hub behind the listener: it resumed from an event still on its way here.)
    if hub is not None and hub.last_seq >= listener.after:
        await listener.follow(hub)
    elif await _cut_past_the_end(manager.log, run_id, listener):
        return False
    else:
        await manager.log.wait(run_id, after=listener.after, timeout=due)
    return True


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
    if request.version < HttpVersion11:
        # No chunks in HTTP/1.0: the stream's end is the connection's, keep-alive or not.
        response.force_close()
    stats = manager.stats
    try:
        await response.prepare(request)
    except ConnectionError:
        # The client went away before its stream began (its transport is closing): expected,
        # as when it goes mid-stream (see Listener.write), so no error; it just leaves.
        stats.listeners_dropped += 1
        return response
    listener = Listener(request, response, settings, stats)
    listener.after = after
    listener.hub = manager.hub(run_id)  # what is appended from now on is live, not catch-up
    stats.open_streams += 1
    if after:
        stats.resumes += 1
    manager.listening.joined(run_id)
    # The stream's first bytes go out with its first page of events, in one write, or alone
    # before it waits for any (bench/README.md, "The run's end in one write").
    opening = retry_field(settings.retry_ms)
    try:
        while not listener.finished and not manager.streams_closed:
            # A page at a time: a long log is never decoded in one go.
            events = await events_log.read(run_id, after=listener.after, limit=CATCH_UP_EVENTS)
            if events:
                if not await _write_page(listener, events, opening):
                    return response
                opening = b""
                continue
            # Also flushes the headers, so the hub's direct writes always come after them.
            if opening and not await listener.write(opening):
                return response
            opening = b""
            if not await _await_more(request, run_id, listener):
                return response
    except asyncio.CancelledError:
        listener.gone = True  # aiohttp cancels the handler when its client disconnects
        raise
    except KeyError as exc:
        if exc.args != (run_id,):
            raise
        # Retention deleted the ended run while this listener was still catching up on it
        # (or, in a cluster, before its `done` reached this node): the stream ends, and the
        # client's reconnect is told the run is gone.
        log.info("run %s was deleted while a listener read it; its stream ends", run_id)
    finally:
        stats.open_streams -= 1
        if listener.gone and (not listener.finished or listener.ends_held):
            stats.listeners_dropped += 1
        manager.listening.left(run_id)
    if opening:  # it ends before its first page (a shutdown, or its run deleted)
        listener.end_with(opening)
    await listener.close()
    return response
