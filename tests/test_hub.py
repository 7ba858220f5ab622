"""A run's live fan-out: every caught-up listener gets every event once, in order, a bounded
number of listeners per turn of the event loop.

The unit tests drive the hub with recording subscribers and count the loop's turns; the last
test follows a run with real SSE listeners over sockets while its events go out in rounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import httpx
import pytest

from research_service.events import Event
from research_service.runs import hub as hub_module
from research_service.runs.hub import FAN_OUT_PER_TURN, Hub
from research_service.web.listener import MAX_WRITE_BYTES, Listener
from tests.conftest import Service
from tests.listener_server import ListenerServer
from tests.loopback import HOST
from tests.sse import listen


class Turns:
    """Counts the event loop's turns (a callback that reschedules itself each turn)."""

    def __init__(self) -> None:
        self.count = 0
        self._handle: asyncio.Handle | None = None

    def __enter__(self) -> Turns:
        self._tick()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _tick(self) -> None:
        self.count += 1
        self._handle = asyncio.get_running_loop().call_soon(self._tick)


@dataclass(eq=False)
class Recorder:
    """A subscriber that notes each event it takes, and the loop turn it took it in."""

    turns: Turns
    after: int = 0
    refuse_at: int | None = None  # it cannot take this seq (its socket is backed up)
    got: list[int] = field(default_factory=list)
    at_turn: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # when each reached the hub, it was told
    released: int = 0
    writes: int = 0  # rounds' calls, each handing it its events at once

    def deliver(self, event: Event, published: float) -> bool:
        if event.seq == self.refuse_at:
            return False
        self.got.append(event.seq)
        self.at_turn.append(self.turns.count)
        self.times.append(published)
        return True

    def deliver_all(self, events: Sequence[Event], published: Sequence[float]) -> bool:
        assert len(published) == len(events)
        if any(event.seq == self.refuse_at for event in events):
            return False
        self.writes += 1
        return all(self.deliver(event, at) for event, at in zip(events, published, strict=True))

    def release(self) -> None:
        self.released += 1


def event(seq: int, name: str = "token") -> Event:
    return Event.create("r1", seq, name, {"text": f"t{seq}"}, t_ms=seq)


def seqs(first: int, last: int) -> list[int]:
    return list(range(first, last + 1))


def followed(turns: Turns, count: int) -> tuple[Hub, list[Recorder]]:
    """A hub and `count` recording subscribers following it from the start."""
    hub = Hub()
    subscribers = [Recorder(turns) for _ in range(count)]
    for subscriber in subscribers:
        assert hub.subscribe(subscriber)
    return hub, subscribers


async def turns_until(condition: Callable[[], bool], turns: Turns, limit: int = 1000) -> None:
    """Give the loop turns until `condition()` holds (the hub's later turns run meanwhile)."""
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not reached in {limit} turns (at turn {turns.count})")


@pytest.fixture
async def turns() -> AsyncIterator[Turns]:
    with Turns() as counting:
        yield counting


async def test_up_to_a_turns_worth_of_listeners_get_each_event_at_once(turns: Turns) -> None:
    hub, subscribers = followed(turns, FAN_OUT_PER_TURN)
    for seq in seqs(1, 3):
        hub.publish(event(seq))
        assert all(s.got == seqs(1, seq) for s in subscribers)  # before publish returned


async def test_many_listeners_get_each_event_a_turns_worth_at_a_time(turns: Turns) -> None:
    hub, subscribers = followed(turns, FAN_OUT_PER_TURN * 3 + 7)
    hub.publish(event(1))
    assert sum(s.got == [1] for s in subscribers) == FAN_OUT_PER_TURN
    # Events published while the round goes on wait for it; each reaches everyone in order.
    hub.publish(event(2))
    await asyncio.sleep(0)
    hub.publish(event(3))
    await turns_until(lambda: all(s.got == seqs(1, 3) for s in subscribers), turns)
    served_in_turn: dict[int, set[int]] = {}
    for number, subscriber in enumerate(subscribers):
        for turn in subscriber.at_turn:
            served_in_turn.setdefault(turn, set()).add(number)
    assert max(len(served) for served in served_in_turn.values()) == FAN_OUT_PER_TURN
    # The first event alone takes ceil((3 * N + 7) / N) = 4 turns, N = FAN_OUT_PER_TURN.
    assert len(served_in_turn) >= 4
    assert hub.followers == len(subscribers)
    assert all(s.released == 0 for s in subscribers)
    for subscriber in subscribers:
        assert subscriber.times == [hub.published_at(seq) for seq in subscriber.got]
    # The last to be reached had all three events in one write, in the round's last turn.
    assert subscribers[-1].writes == 1
    assert len(set(subscribers[-1].at_turn)) == 1
    # Caught up: the next event starts a round of its own.
    hub.publish(event(4))
    await turns_until(lambda: all(s.got == seqs(1, 4) for s in subscribers), turns)


async def test_a_round_lets_go_of_who_cannot_take_an_event_and_skips_who_left(
    turns: Turns,
) -> None:
    hub, subscribers = followed(turns, FAN_OUT_PER_TURN * 2)
    backed_up, leaving = subscribers[-1], subscribers[-2]
    backed_up.refuse_at = 2
    hub.publish(event(1))
    hub.publish(event(2))
    hub.unsubscribe(leaving)  # its task left before its turn came: it reads the log now
    await turns_until(lambda: subscribers[-3].got == [1, 2], turns)
    assert backed_up.got == []  # handed 1 and 2 together, it could take neither
    assert backed_up.released == 1
    assert leaving.got == []
    assert leaving.released == 0
    assert hub.followers == len(subscribers) - 2
    hub.publish(event(3))
    await turns_until(lambda: subscribers[-3].got == [1, 2, 3], turns)
    assert backed_up.got == []
    assert leaving.got == []


async def test_a_round_lets_go_of_a_listener_that_missed_an_event(turns: Turns) -> None:
    hub, subscribers = followed(turns, FAN_OUT_PER_TURN * 2)
    hub.publish(event(1))
    behind = subscribers[-1]
    behind.after = -1  # as if it had not been handed an event the hub published
    hub.publish(event(2))
    await turns_until(lambda: behind.released == 1, turns)
    assert behind.got == []  # it catches up from the log, in order, instead
    await turns_until(lambda: subscribers[-2].got == [1, 2], turns)


async def test_who_joins_during_a_round_gets_what_comes_after_its_join(turns: Turns) -> None:
    hub, subscribers = followed(turns, FAN_OUT_PER_TURN * 2)
    hub.publish(event(1))
    hub.publish(event(2))
    late = Recorder(turns, after=1)
    assert not hub.subscribe(late)  # behind the hub: it reads event 2 from the log first
    late.after = 2
    assert hub.subscribe(late)
    hub.publish(event(3))
    await turns_until(lambda: all(s.got == seqs(1, 3) for s in subscribers), turns)
    await turns_until(lambda: late.got == [3], turns)
    hub.publish(event(4))
    await turns_until(lambda: late.got == [3, 4], turns)  # the last to join, the last served
    assert all(s.got == seqs(1, 4) for s in subscribers)


async def test_the_done_reaches_everyone_and_lets_everyone_go(turns: Turns) -> None:
    hub, subscribers = followed(turns, FAN_OUT_PER_TURN + 1)
    hub.publish(event(1))
    hub.publish(event(2, "done"))
    assert hub.closed
    assert not hub.subscribe(Recorder(turns, after=2))
    await turns_until(lambda: all(s.released == 1 for s in subscribers), turns)
    assert all(s.got == [1, 2] for s in subscribers)
    assert not hub.followed


async def test_closing_mid_round_lets_everyone_go_and_stops_the_round(turns: Turns) -> None:
    hub, subscribers = followed(turns, FAN_OUT_PER_TURN * 2)
    hub.publish(event(1))
    hub.close()  # the service shuts down: each listener's task ends its stream from the log
    assert all(s.released == 1 for s in subscribers)
    for _ in range(5):
        await asyncio.sleep(0)
    assert sum(s.got == [1] for s in subscribers) == FAN_OUT_PER_TURN
    assert sum(s.got == [] for s in subscribers) == FAN_OUT_PER_TURN


class OneListener(ListenerServer):
    """Its listener is handed events by the test, as a hub's round does."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[bool] = []
        self.end = asyncio.Event()

    async def feed(self, listener: Listener) -> None:
        now = asyncio.get_running_loop().time()
        self.handed.append(listener.deliver_all([event(1), event(2)], [now, now]))
        # Past one bounded write's worth, nothing is taken: the listener reads the log instead.
        big = Event("r1", 3, "token", 3, b"x" * (MAX_WRITE_BYTES + 1))
        self.handed.append(listener.deliver_all([big], [now]))
        await self.end.wait()


async def test_a_listener_writes_the_events_of_a_round_at_once() -> None:
    async with OneListener() as server:
        reader, writer = await asyncio.open_connection(HOST, server.port)
        try:
            writer.write(f"GET /events HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode())
            async with asyncio.timeout(5):
                await reader.readuntil(b"\r\n\r\n")
                # No later event and no timer: the bytes must have gone out when handed.
                expected = b"retry: 3000\n\n" + event(1).wire + event(2).wire
                assert await reader.readexactly(len(expected)) == expected
            assert server.handed == [True, False]
            assert server.stats.events_delivered == 2
            assert sum(server.stats.delivery_lag.counts) == 2
        finally:
            server.end.set()
            writer.close()


async def read_http10_stream(port: int, run_id: str) -> bytes:
    """The whole body of a run's stream, read as raw bytes over HTTP/1.0 (no chunking)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /v1/runs/{run_id}/events HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        return await reader.read()  # HTTP/1.0: the server closes the connection at the end
    finally:
        writer.close()


async def test_an_http10_stream_asked_to_keep_alive_still_ends_after_its_done(
    service: Service, client: httpx.AsyncClient
) -> None:
    """HTTP/1.0 has no chunks: a stream ends when its connection does. A client asking for
    keep-alive must still see it end after the `done`; aiohttp kept such a connection open
    for a next request (75 s), so the stream never ended."""
    run_id = await service.create(client)
    await service.wait_done(run_id)
    reader, writer = await asyncio.open_connection("127.0.0.1", service.server.port)
    try:
        writer.write(
            f"GET /v1/runs/{run_id}/events HTTP/1.0\r\nHost: 127.0.0.1\r\n"
            "Connection: keep-alive\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        async with asyncio.timeout(5):
            body = await reader.read()
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"keep-alive" not in head.lower()
    stored = await service.manager.log.read(run_id, after=0)
    assert body == b"retry: 3000\n\n" + b"".join(e.wire for e in stored)


async def test_real_listeners_followed_in_rounds_each_get_the_whole_run(
    service: Service, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "FAN_OUT_PER_TURN", 3)
    service.llm.pieces = [f"p{n} " for n in range(60)]
    service.llm.hold_after = 4
    run_id = await service.create(client)
    await service.until_held()
    hub = service.manager.hub(run_id)
    assert hub is not None
    port = service.server.port
    assert port is not None
    url = service.url(f"/v1/runs/{run_id}/events")
    parsed = [asyncio.create_task(listen(client, url)) for _ in range(7)]
    raw = [asyncio.create_task(read_http10_stream(port, run_id)) for _ in range(7)]
    async with asyncio.timeout(10):
        # No event says "subscribed": give the loop turns until every listener has caught
        # up from the log and follows the hub.
        while hub.followers < len(parsed) + len(raw):  # noqa: ASYNC110 - no event for it
            await asyncio.sleep(0)
    service.llm.release.set()
    bodies = await asyncio.gather(*raw)
    results = await asyncio.gather(*parsed)
    stored = await service.manager.log.read(run_id, after=0)
    assert stored[-1].is_final
    assert len(stored) > 60
    for body in bodies:
        assert body == b"retry: 3000\n\n" + b"".join(e.wire for e in stored)
    for got in results:
        assert got.ids == [e.id for e in stored]
        assert got.text() == service.llm.answer
