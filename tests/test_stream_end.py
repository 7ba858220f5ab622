"""A stream's first and last writes: its `retry` field goes out with its first page of
events, and the run's last events with the end of the response, each in one write.

Most tests record what the service writes to its sockets (every `write` of asyncio's socket
transports in this process) and find the write that carries the run's `done`: it must also
end the chunked body (`0\r\n\r\n`), whether the `done` came live through the run's hub or
from the log to a listener catching up.
"""

from __future__ import annotations

import asyncio
import socket
from asyncio import selector_events

import httpx
import pytest

from research_service.events import Event, retry_field
from research_service.runs.hub import Hub
from research_service.settings import Settings
from research_service.web.listener import COALESCE_S, Listener
from tests.conftest import Service
from tests.listener_server import ListenerServer
from tests.loopback import HOST
from tests.sse import Received, listen

CHUNKED_END = b"0\r\n\r\n"


class Writes:
    """Every socket write made in this process while it is installed, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[bytes] = []
        write = selector_events._SelectorSocketTransport.write

        def recording(transport: selector_events._SelectorSocketTransport, data: bytes) -> None:
            self.seen.append(bytes(data))
            write(transport, data)

        monkeypatch.setattr(selector_events._SelectorSocketTransport, "write", recording)

    def carrying_done(self) -> list[bytes]:
        return [data for data in self.seen if b"\nevent: done\n" in data]


async def follow_held_run(
    service: Service, client: httpx.AsyncClient
) -> tuple[str, Hub, asyncio.Task[Received]]:
    """A run held after its first piece, and a listener that follows it through its hub."""
    service.llm.hold_after = 1
    run_id = await service.create(client)
    await service.until_held()
    hub = service.manager.hub(run_id)
    assert hub is not None
    listener = asyncio.create_task(listen(client, service.url(f"/v1/runs/{run_id}/events")))
    async with asyncio.timeout(5):
        # No event says "subscribed": give the loop turns until the listener follows the hub.
        while hub.followers < 1:  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0)
    return run_id, hub, listener


def assert_ends_the_body(write: bytes, done_wire: bytes) -> None:
    # One chunk with the `done` (and whatever was pending before it), then the body's end.
    assert write.endswith(done_wire + b"\r\n" + CHUNKED_END), write[-200:]
    size, _, rest = write.partition(b"\r\n")
    assert int(size, 16) == len(rest) - len(b"\r\n" + CHUNKED_END)


def event(seq: int, name: str = "token") -> Event:
    return Event.create("r1", seq, name, {"text": f"t{seq}"}, t_ms=seq)


class HandedEnd(ListenerServer):
    """Its listener is handed a token, then the `done`, as a hub does.

    `how`: the token long after the write before it (it is written at once), or within the
    coalescing interval (it waits 1 ms for more); or both events at once, as a hub's round
    hands them over.
    """

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    async def feed(self, listener: Listener) -> None:
        now = asyncio.get_running_loop().time()
        if self.how == "round":
            assert listener.deliver_all([event(1), event(2, "done")], [now, now])
        else:
            if self.how == "token-written-at-once":
                listener.last_write -= 1.0  # as if the stream had been quiet for a second
            else:
                # As if a write had just gone out, however long this task waited since the
                # `retry` field's (on a loaded machine, past the 1 ms interval: it was flaky).
                # Its flush falls due 2 ms from now, well within the wait below.
                listener.last_write = asyncio.get_running_loop().time() + COALESCE_S
            assert listener.deliver(event(1), now)
            listener.last_write -= 1.0  # the `done` comes a second after it
            assert listener.deliver(event(2, "done"), now)
        assert listener.finished
        # Past the deadline of a pending token's flush, which must not write it on its own:
        # a listener's task may wake later than that (in a hub's rounds, tens of ms later).
        await asyncio.sleep(COALESCE_S * 5)


@pytest.mark.parametrize("how", ["token-written-at-once", "token-pending", "round"])
async def test_a_done_handed_over_is_written_with_the_end_of_the_response(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    writes = Writes(monkeypatch)
    async with HandedEnd(how) as server:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            writer.write(f"GET /events HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            async with asyncio.timeout(5):
                await reader.readuntil(b"\r\n\r\n")
                body = await reader.readuntil(CHUNKED_END)
        finally:
            writer.close()
    token, done = event(1).wire, event(2, "done").wire
    (write,) = writes.carrying_done()
    if how == "token-written-at-once":  # the `done` alone waited for the end
        assert token not in write
        assert_ends_the_body(write, done)
    else:  # the token waited too, and went out with the `done`, at the end
        assert_ends_the_body(write, token + done)
    assert body.endswith(done + b"\r\n" + CHUNKED_END)
    assert server.stats.events_delivered == 2
    assert sum(server.stats.delivery_lag.counts) == 2


async def test_a_live_runs_done_goes_out_with_the_end_of_its_response(
    service: Service, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes = Writes(monkeypatch)
    run_id, hub, listener = await follow_held_run(service, client)
    followed_from = hub.last_seq
    lag_before = sum(service.manager.stats.delivery_lag.counts)
    service.llm.release.set()
    got = await listener

    stored = await service.manager.log.read(run_id, after=0)
    assert got.ids == [e.id for e in stored]
    assert got.last[0] == "done"
    (write,) = writes.carrying_done()
    assert_ends_the_body(write, stored[-1].wire)
    # What was stored before it opened went out with its `retry` field, in one write.
    (opening,) = [data for data in writes.seen if b"retry: " in data]
    caught_up = b"".join(e.wire for e in stored[:followed_from])
    assert opening.partition(b"\r\n")[2] == retry_field(Settings().retry_ms) + caught_up + b"\r\n"
    # Every live event's delivery lag was counted once, the held `done`'s once written.
    live = len(stored) - followed_from
    assert sum(service.manager.stats.delivery_lag.counts) - lag_before == live
    assert service.manager.stats.listeners_dropped == 0


async def test_a_listener_catching_up_to_the_end_gets_it_with_the_end_of_its_response(
    service: Service, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = await service.create(client)
    await service.wait_done(run_id)
    writes = Writes(monkeypatch)
    got = await listen(client, service.url(f"/v1/runs/{run_id}/events"))

    stored = await service.manager.log.read(run_id, after=0)
    assert got.ids == [e.id for e in stored]
    (write,) = writes.carrying_done()
    # The whole log fits one page: the stream's `retry` field, every event of the run and
    # the end, in one write after the headers.
    assert_ends_the_body(write, stored[-1].wire)
    _, _, body = write.partition(b"\r\n")
    assert body.startswith(retry_field(Settings().retry_ms) + b"".join(e.wire for e in stored))
    assert service.manager.stats.events_delivered == len(stored)


@pytest.mark.parametrize("abort_first", [True, False], ids=["as-its-task-wakes", "as-it-ends"])
async def test_a_client_gone_as_its_done_is_handed_over_counts_as_dropped_once(
    service: Service, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, abort_first: bool
) -> None:
    """The hub hands the `done` over and the client's connection is lost before the end is
    written: the listener did not get its end, so it counts as dropped, once. Lost before
    its task wakes, aiohttp cancels the task; lost after, writing the end fails."""
    release, close = Listener.release, Listener.close
    closed = asyncio.Event()

    def leaving(listener: Listener) -> None:
        transport = listener.transport if listener.finished else None
        if transport is not None and abort_first:
            transport.abort()  # its connection_lost runs before the task's next step
        release(listener)
        if transport is not None and not abort_first:
            transport.abort()  # the task's next step runs first, and ends the response

    async def closing(listener: Listener) -> None:
        try:
            await close(listener)
        finally:
            closed.set()

    monkeypatch.setattr(Listener, "release", leaving)
    monkeypatch.setattr(Listener, "close", closing)
    _, _, listener = await follow_held_run(service, client)
    service.llm.release.set()
    with pytest.raises(httpx.HTTPError):
        await listener
    stats = service.manager.stats
    async with asyncio.timeout(5):
        if abort_first:  # cancelled: its stream's `finally` is the last of it, in one step
            while stats.open_streams:  # noqa: ASYNC110 - no event for it
                await asyncio.sleep(0)
        else:
            await closed.wait()
    assert closed.is_set() is not abort_first
    assert stats.listeners_dropped == 1


class StalledAtTheEnd(ListenerServer):
    """Its client stopped reading: more than the transport's high-water mark waits in its
    buffer (so writing pauses) when the `done` is handed over, with room for it."""

    async def feed(self, listener: Listener) -> None:
        transport = listener.transport
        assert transport is not None
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        high = transport.get_write_buffer_limits()[1]
        assert listener.direct.send(b": " + b"x" * (high + 16 * 1024) + b"\n\n")
        assert transport.get_write_buffer_size() > high
        assert listener.deliver(event(1, "done"), asyncio.get_running_loop().time())


async def read_until_reset(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, got: bytearray
) -> None:
    """Read `sock` into `got` until its end (or until reading raises)."""
    while chunk := await loop.sock_recv(sock, 65536):
        got += chunk


async def test_a_client_that_stopped_reading_is_cut_at_the_end_after_the_write_timeout() -> None:
    async with StalledAtTheEnd(Settings(write_timeout_s=0.2)) as server:
        loop = asyncio.get_running_loop()
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        got = bytearray()
        try:
            await loop.sock_connect(client, (HOST, server.port))
            request = f"GET /events HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
            await loop.sock_sendall(client, request.encode())
            # It reads nothing until its stream has ended: the end must not wait for it.
            async with asyncio.timeout(5):
                await server.closed.wait()
                with pytest.raises(ConnectionResetError):
                    await read_until_reset(loop, client, got)
        finally:
            client.close()
    assert b"event: done" not in got
    # Cut, as a listener whose write took no data is (it may resume), not gone.
    assert server.stats.listeners_cut == 1
    assert server.stats.listeners_dropped == 0


async def test_a_stream_that_ends_before_any_event_still_says_its_retry(
    service: Service, client: httpx.AsyncClient
) -> None:
    """Streams are closed (a cluster node draining: its listeners resume elsewhere) before
    the stream's first page: it ends at once, with the `retry` field its client resumes by."""
    service.llm.hold_after = 1
    run_id = await service.create(client)
    await service.until_held()
    service.manager.close_streams()
    response = await client.get(service.url(f"/v1/runs/{run_id}/events"))
    assert response.status_code == 200
    assert response.content == retry_field(Settings().retry_ms)
    service.llm.release.set()
    await service.wait_done(run_id)
