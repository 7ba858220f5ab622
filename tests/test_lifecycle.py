"""Runs outlive connections: cancel, abandon, slow listeners, disconnect clean-up, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import socket
import sqlite3
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import ClientSession, web

from research_service import loop_turns
from research_service.events import parse_event_id
from research_service.runs import hub
from research_service.runs.hub import FAN_OUT_PER_TURN
from research_service.runs.sqlite_log import RUN_STORE_FILE
from tests import postgres
from tests.cluster import REDIS_URL, delete_prefix, redis_or_skip
from tests.conftest import MakeService, Service
from tests.sse import after_event, listen

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

#: Long enough for a listener to join a new run first, even on a busy machine.
ABANDON_AFTER_S = 0.5


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Poll a condition the service exposes no event for, up to `timeout`."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - these counters have no event to wait on
            await asyncio.sleep(0.005)


async def test_cancel_stops_the_run_promptly_with_done_cancelled(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.pieces = [f"c{n} " for n in range(10)]
    service.llm.hold_after = 4
    run_id = await service.create(client)
    url = service.url(f"/v1/runs/{run_id}/events")
    listener = asyncio.create_task(listen(client, url))
    await service.until_held()
    response = await client.post(service.url(f"/v1/runs/{run_id}/cancel"))
    assert response.status_code == 202
    async with asyncio.timeout(2):
        got = await listener
    name, done = got.last
    assert name == "done"
    assert done["status"] == "cancelled"
    assert done["error"]["code"] == "cancelled"
    assert done["answer"] == got.text() == "c0 c1 c2 c3 "
    assert got.names.count("done") == 1


def in_a_run() -> bool:
    """Whether the caller is a run's task (named `run-ID`), not a request's."""
    task = asyncio.current_task()
    return task is not None and task.get_name().startswith("run-")


class HeldGate:
    """Stands in for the loop's turn gate (loop_turns.SHARED) as a burst's backlog would be:
    the callers it `holds` (every one by default) wait until the test opens it; the others go
    on at once."""

    def __init__(self, *, holds: Callable[[], bool] = lambda: True) -> None:
        self.holds = holds
        self.reached = asyncio.Event()
        self.opened = asyncio.Event()

    def pass_now(self) -> bool:
        return False  # the caller then awaits turn(), which decides

    async def turn(self) -> None:
        if not self.holds():
            return
        self.reached.set()
        await self.opened.wait()


async def test_a_post_in_a_burst_waits_for_its_turn_then_creates_its_run(
    service: Service, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = HeldGate()
    monkeypatch.setattr(loop_turns, "SHARED", gate)
    posting = asyncio.create_task(service.create(client))
    async with asyncio.timeout(5):
        await gate.reached.wait()  # the request waits before its body is even read
    assert not posting.done()
    assert service.manager.active_runs == 0  # nothing stored, nothing started yet
    gate.opened.set()
    async with asyncio.timeout(5):
        run_id = await posting
    await service.wait_done(run_id)
    assert (await service.manager.state(run_id)).finished


async def test_a_run_cancelled_before_its_turn_to_start_ends_with_done_cancelled(
    service: Service, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = HeldGate(holds=in_a_run)  # requests go on; the run waits
    monkeypatch.setattr(loop_turns, "SHARED", gate)
    run_id = await service.create(client)
    async with asyncio.timeout(5):
        await gate.reached.wait()  # the run waits for its turn to start
    response = await client.post(service.url(f"/v1/runs/{run_id}/cancel"))
    assert response.status_code == 202
    await service.wait_done(run_id)
    gate.opened.set()  # the listener below passes it too
    got = await listen(client, service.url(f"/v1/runs/{run_id}/events"))
    assert got.names == ["done"]
    _name, done = got.last
    assert done["status"] == "cancelled"
    assert done["error"]["code"] == "cancelled"


async def test_run_without_listeners_is_abandoned(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(abandon_after_s=0.2)
    service.llm.hold_after = 1
    run_id = await service.create(client)
    url = service.url(f"/v1/runs/{run_id}/events")
    first = await listen(client, url, stop=after_event("token"))
    await service.wait_done(run_id)
    rest = await listen(client, url, last_event_id=first.ids[-1])
    _name, done = rest.last
    assert done["status"] == "cancelled"
    assert done["error"]["code"] == "abandoned"


async def test_listener_keeps_a_run_from_being_abandoned(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(abandon_after_s=ABANDON_AFTER_S)
    service.llm.hold_after = 1
    run_id = await service.create(client)
    following = asyncio.create_task(listen(client, service.url(f"/v1/runs/{run_id}/events")))
    await wait_until(lambda: service.manager.listening.count(run_id) == 1)
    # Past the abandon timeout with a listener: a run nobody followed would be cancelled.
    await asyncio.sleep(1.5 * ABANDON_AFTER_S)
    assert not (await service.manager.state(run_id)).finished
    service.llm.release.set()
    _name, done = (await following).last
    assert done["status"] == "completed"
    assert service.manager.listening.count(run_id) == 0


async def _raw_listener(
    port: int, path: str, *, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a raw HTTP/1.1 listener and read up to the `retry` field."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    await reader.readuntil(b"retry: 3000\n\n")
    return reader, writer


@pytest.mark.parametrize("fan_out_per_turn", [FAN_OUT_PER_TURN, 8], ids=["at-once", "rounds"])
async def test_slow_listener_is_cut_without_slowing_others(
    make_service: MakeService,
    client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    fan_out_per_turn: int,
) -> None:
    # 51 listeners: each event reaches them all at once, or in rounds of 8 per loop turn.
    monkeypatch.setattr(hub, "FAN_OUT_PER_TURN", fan_out_per_turn)
    # A budget far above this answer's ~1M tokens: the test is about the socket. No heartbeat
    # falls due meanwhile: only the fan-out's letting go hands the slow one to its own task.
    service = await make_service(write_timeout_s=1.0, max_tokens_per_run=10**7, heartbeat_s=120)
    chunk = "x" * 32_768
    service.llm.pieces = [f"{chunk}{n} " for n in range(120)]
    service.llm.hold_after = 0
    run_id = await service.create(client)
    path = f"/v1/runs/{run_id}/events"
    port = service.server.port
    assert port is not None
    assert service.server.runner is not None
    http_server = service.server.runner.server
    assert http_server is not None
    before = set(http_server.connections)  # the client's keep-alive connection
    slow_reader, slow_writer = await _raw_listener(port, path, rcvbuf=4096)
    # Small kernel buffers on both ends, so a client that stops reading stalls the socket
    # after a few KiB instead of the megabytes loopback autotuning would absorb.
    (slow_handler,) = set(http_server.connections) - before
    assert slow_handler.transport is not None
    server_socket = slow_handler.transport.get_extra_info("socket")
    server_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    async def keep_pace(session: ClientSession) -> bytes:
        async with session.get(service.url(path)) as response:
            return await response.read()

    async with ClientSession() as session:
        pacers = [asyncio.create_task(keep_pace(session)) for _ in range(50)]
        await wait_until(lambda: service.manager.listening.count(run_id) == 51)
        service.llm.release.set()
        # The run finishes while the slow client has not read a byte since the retry field.
        await service.wait_done(run_id, timeout=30)
        bodies = await asyncio.gather(*pacers)
    wire = b"retry: 3000\n\n" + b"".join(
        e.wire for e in await service.manager.log.read(run_id, after=0)
    )
    assert all(body == wire for body in bodies)
    # The server cuts the slow client once its socket has taken nothing for the write timeout.
    await wait_until(lambda: slow_handler not in http_server.connections, timeout=10)
    received = b""
    async with asyncio.timeout(10):
        try:
            while data := await slow_reader.read(2**20):
                received += data
        except ConnectionResetError:
            pass
    slow_writer.close()
    assert b"event: done" not in received
    assert len(received) < len(wire)
    # It can resume by id and gets exactly the rest. The cut is a reset, which may discard
    # what the client had not read yet: it resumes after the last event it does have, if any.
    complete = received.split(b"\n\n")[:-1]  # the events whose end arrived
    ids = [
        line[4:].decode()
        for event in complete
        for line in event.split(b"\n")
        if line.startswith(b"id: ")
    ]
    last_id = ids[-1] if ids else f"{run_id}:0"
    assert parse_event_id(last_id) is not None
    rest = await listen(client, service.url(path), last_event_id=last_id, timeout=30)
    assert rest.last[1]["status"] == "completed"
    assert rest.ids[0] == f"{run_id}:{int(last_id.split(':')[1]) + 1}"


async def test_dropped_listeners_release_tasks_and_memory(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.hold_after = 0
    run_id = await service.create(client)
    port = service.server.port
    assert port is not None
    path = f"/v1/runs/{run_id}/events"
    assert service.server.runner is not None
    http_server = service.server.runner.server
    assert http_server is not None

    idle_connections = len(http_server.connections)  # the client's keep-alive connection

    async def connect_and_drop(count: int) -> None:
        connections = await asyncio.gather(*(_raw_listener(port, path) for _ in range(count)))
        await wait_until(lambda: service.manager.listening.count(run_id) == count)
        for _, writer in connections:
            writer.close()
        await asyncio.gather(*(writer.wait_closed() for _, writer in connections))
        # Noticed at once, not by the 15 s heartbeat finding a dead socket. (The bound leaves
        # room for a loaded machine: 1,000 closes are noticed within about 0.35 s here.)
        await wait_until(lambda: service.manager.listening.count(run_id) == 0, timeout=10)
        await wait_until(lambda: len(http_server.connections) == idle_connections, timeout=10)

    await connect_and_drop(50)  # warm up lazily created caches
    gc.collect()
    tasks_before = len(asyncio.all_tasks())
    tracemalloc.start()
    try:
        memory_before, _ = tracemalloc.get_traced_memory()
        await connect_and_drop(1000)
        await wait_until(lambda: len(asyncio.all_tasks()) <= tasks_before, timeout=5)
        gc.collect()
        memory_after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # While held, the 1,000 listeners took megabytes; afterwards only the grown capacity of
    # a few hash tables (the loop's fd maps, the waiter set) remains.
    assert peak - memory_before > 8 * 2**20
    assert memory_after - memory_before < 2**20
    service.llm.release.set()
    await service.wait_done(run_id)


async def test_shutdown_ends_live_runs_with_done(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.hold_after = 1
    run_id = await service.create(client)
    listener = asyncio.create_task(listen(client, service.url(f"/v1/runs/{run_id}/events")))
    await service.until_held()
    await wait_until(lambda: service.manager.listening.count(run_id) == 1)
    await service.server.close()
    got = await listener
    name, done = got.last
    assert name == "done"
    assert done["status"] == "cancelled"
    assert done["error"]["code"] == "shutdown"


TCP_STATES = {1: "ESTABLISHED", 7: "CLOSE", 8: "CLOSE_WAIT"}


def tcp_state(sock: socket.socket) -> str:
    """The kernel's TCP state of `sock` (Linux TCP_INFO's first byte)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    return TCP_STATES.get(info[0], str(info[0]))


def server_side_open(server_port: int, client_port: int) -> bool:
    """Whether the kernel still has the server's end of this connection (/proc/net/tcp)."""
    local, remote = f"{server_port:04X}", f"{client_port:04X}"
    with open("/proc/net/tcp") as table:
        for row in table.read().splitlines()[1:]:
            fields = row.split()
            if fields[1].endswith(":" + local) and fields[2].endswith(":" + remote):
                return True
    return False


async def test_a_cut_listener_really_loses_its_connection(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    """The write timeout aborts the socket: the client sees a reset and the kernel frees it."""
    service = await make_service(write_timeout_s=0.5, max_tokens_per_run=10**7)
    service.llm.pieces = [f"{'y' * 32_768}{n} " for n in range(60)]
    service.llm.hold_after = 0
    run_id = await service.create(client)
    port = service.server.port
    assert port is not None
    assert service.server.runner is not None
    http_server = service.server.runner.server
    assert http_server is not None
    before = set(http_server.connections)
    reader, writer = await _raw_listener(port, f"/v1/runs/{run_id}/events", rcvbuf=4096)
    sock = writer.get_extra_info("socket")
    client_port = sock.getsockname()[1]
    (handler,) = set(http_server.connections) - before
    assert handler.transport is not None
    handler.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        service.llm.release.set()
        await service.wait_done(run_id, timeout=30)
        # The client has not read since the retry field. Once the server has taken no
        # progress for the write timeout it must reset the connection, not leave it half-open.
        await wait_until(lambda: tcp_state(sock) == "CLOSE", timeout=10)
        assert not server_side_open(port, client_port)
        with contextlib.suppress(ConnectionResetError):
            async with asyncio.timeout(5):
                while await reader.read(2**20):
                    pass
    finally:
        writer.close()


@contextlib.contextmanager
def store_writes_held(path: Path) -> Iterator[None]:
    """Another connection holds the run store's write lock: the service's inserts wait for it."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def stored_run_id(service: Service, timeout: float = 5.0) -> str:
    """The id of the one run in the store, once its record is committed."""
    try:
        async with asyncio.timeout(timeout):
            # A row committed by the store has no event to wait on.
            while not (records := await service.manager.log.list_runs(limit=2)):  # noqa: ASYNC110
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"no run was stored within {timeout:g} s") from None
    (record,) = records
    return record.id


async def done_of(service: Service, run_id: str, timeout: float = 5.0) -> Any:
    """The payload of the run's `done`, once it is in the log; fails if none comes in time."""
    with contextlib.suppress(TimeoutError):
        await service.wait_done(run_id, timeout=timeout)
    events = await service.manager.log.read(run_id, after=0)
    assert events, f"run {run_id} never started: stored, with an empty log (queued forever)"
    assert events[-1].is_final, f"run {run_id} has not ended: {events[-1].name} is its last event"
    return events[-1].data


def served_connections(service: Service) -> web.Server:
    """The aiohttp server behind the test server (its open connections, its request count)."""
    assert service.server.runner is not None
    http_server = service.server.runner.server
    assert http_server is not None
    return http_server


_CREATE_BODY = b'{"question": "How do I read a CSV file?"}'
REQUESTS_THAT_CREATE_A_RUN = {
    "POST /v1/runs": (
        b"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(_CREATE_BODY), _CREATE_BODY)
    ),
    "GET /v1/research": (
        b"GET /v1/research?q=How+do+I+read+a+CSV+file%3F HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    ),
}


@pytest.mark.parametrize(
    "raw_request",
    list(REQUESTS_THAT_CREATE_A_RUN.values()),
    ids=list(REQUESTS_THAT_CREATE_A_RUN),
)
async def test_a_run_stored_after_its_request_went_away_still_runs_to_its_done(
    make_service: MakeService, tmp_path: Path, raw_request: bytes
) -> None:
    """The client closes while its run's record is being stored (committed only afterwards):
    the run still starts, and, with nobody listening, is abandoned; never queued forever."""
    service = await make_service(store="sqlite", abandon_after_s=ABANDON_AFTER_S)
    service.llm.hold_after = 0  # it runs until it is abandoned
    port = service.server.port
    assert port is not None
    http_server = served_connections(service)
    idle_connections = len(http_server.connections)
    with store_writes_held(tmp_path / "data" / RUN_STORE_FILE):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(raw_request)
            # Its record is being stored: the insert waits for the store's write lock.
            await wait_until(lambda: service.manager.active_runs == 1)
        # The client is gone, and its handler with it (aiohttp cancels a disconnected one).
        await wait_until(lambda: len(http_server.connections) == idle_connections)
    # Only now is the record committed.
    done = await done_of(service, await stored_run_id(service))
    assert done["status"] == "cancelled"
    assert done["error"]["code"] == "abandoned"


async def test_a_listener_gone_before_its_stream_began_is_no_error(
    service: Service, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that asks for a stream and closes at once: no traceback, no 500 logged."""
    run_id = await service.create(client)
    await service.wait_done(run_id)
    port = service.server.port
    assert port is not None
    http_server = served_connections(service)
    idle_connections, requests = len(http_server.connections), http_server.requests_count
    caplog.set_level(logging.DEBUG)
    path = f"/v1/runs/{run_id}/events"
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await wait_until(
        lambda: (
            http_server.requests_count > requests
            and len(http_server.connections) == idle_connections
        )
    )
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert [r for r in caplog.records if r.exc_info] == []
    about_it = [r.getMessage() for r in caplog.records if path in r.getMessage()]
    assert len(about_it) <= 1, about_it  # at most the access line
    assert not any('" 500 ' in line for line in about_it), about_it


async def insert_waits_for(holder: asyncpg.Connection, table: str) -> None:
    """Wait until another connection's insert into `table` waits for the lock `holder` has."""
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid != pg_backend_pid() "
        "AND wait_event_type = 'Lock' AND query LIKE $1"
    )
    async with asyncio.timeout(5):
        # The server tells who waits only when asked.
        while not await holder.fetchval(sql, f"%INSERT INTO {table} %"):
            await asyncio.sleep(0.005)
            # Within a transaction the activity seen is a snapshot: take a new one.
            await holder.execute("SELECT pg_stat_clear_snapshot()")


async def test_a_cluster_run_stored_after_its_request_went_away_still_runs_to_its_done(
    postgres_url: str, make_service: MakeService
) -> None:
    """The same on a cluster node (PostgreSQL and Redis): the run is stored, queued, taken
    and abandoned. (Cut short, the insert was cancelled, its slot left taken for 2 minutes.)"""
    redis = await redis_or_skip()
    prefix = f"test-{secrets.token_hex(4)}:"
    holder: asyncpg.Connection | None = None
    node: Service | None = None
    try:
        holder = await asyncpg.connect(postgres_url)
        node = await make_service(
            store="postgres",
            database_url=postgres_url,
            redis_url=REDIS_URL,
            redis_prefix=prefix,
            abandon_after_s=ABANDON_AFTER_S,
        )
        node.llm.hold_after = 0  # it runs until it is abandoned
        port = node.server.port
        assert port is not None
        http_server = served_connections(node)
        idle_connections = len(http_server.connections)
        locked = holder.transaction()
        await locked.start()
        await holder.execute("LOCK TABLE runs IN SHARE MODE")  # inserts wait for it
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(REQUESTS_THAT_CREATE_A_RUN["POST /v1/runs"])
            await insert_waits_for(holder, "runs")
        await wait_until(lambda: len(http_server.connections) == idle_connections)
        await locked.rollback()
        done = await done_of(node, await stored_run_id(node))
        assert done["status"] == "cancelled"
        assert done["error"]["code"] == "abandoned"
    finally:
        if holder is not None:
            await holder.close()
        if node is not None:
            await node.server.close()  # before its keys go, so it writes none afterwards
        await delete_prefix(redis, prefix)
        await redis.aclose()


async def test_a_cancel_while_the_runs_done_is_written_changes_nothing(
    make_service: MakeService, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A cancel that came as the `done` waited for the disk stopped that write half done: the
    done was stored, but never reached the run's memory, and the run stayed `running` to every
    listener, snapshot and listing until a restart."""
    service = await make_service(store="sqlite")
    service.llm.hold_after = 1
    created = await client.post(service.url("/v1/runs"), json={"question": "Race?"})
    run_id = created.json()["id"]
    await service.until_held()
    live = service.manager._live[run_id]  # the moment its end begins has no event to wait on
    with store_writes_held(tmp_path / "data" / RUN_STORE_FILE):
        service.llm.release.set()
        await wait_until(lambda: live.ending)  # its done now waits for the write lock
        cancelled = await client.post(service.url(f"/v1/runs/{run_id}/cancel"))
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["cancelling"] is False  # too late: the run is ending
    done = await done_of(service, run_id)
    assert done["status"] == "completed"
    snapshot = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    assert snapshot["status"] == "completed"
    stream = await listen(client, service.url(f"/v1/runs/{run_id}/events"), timeout=10)
    assert stream.last[0] == "done"
