"""Slow, idle, broken and too many connections against a real `serve` process, on real sockets."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sys
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path

import httpx
import pytest

from research_service.web.openapi import DOCUMENT_FILE
from tests.metrics_text import metric_samples
from tests.served import CORPUS, Served, open_files_limit, start, stop
from tests.sse import listen

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
#: Long enough for any answer here; the tests wait for events, never for this.
READ_TIMEOUT_S = 20.0


def serve_args(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        "--corpus",
        str(CORPUS),
        *extra,
    ]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    args = serve_args(
        tmp_path,
        "--header-timeout-s",
        str(HEADER_TIMEOUT_S),
        "--body-timeout-s",
        str(BODY_TIMEOUT_S),
        "--token-delay-ms",
        "0",
    )
    service = await start(*args)
    yield service
    if service.process.returncode is None:
        assert await stop(service) == 0


async def exchange(port: int, raw: bytes) -> bytes:
    """Send `raw` on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(READ_TIMEOUT_S):
            return await reader.read()
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


# --- slowloris ----------------------------------------------------------------------------


async def test_a_connection_sending_its_headers_slowly_is_closed(served: Served) -> None:
    # Half a request, then nothing: the server closes it after --header-timeout-s, not 75 s.
    got = await exchange(served.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    assert got == b""


async def test_an_idle_connection_is_closed(served: Served) -> None:
    assert await exchange(served.port, b"") == b""


def server_side_state(server_port: int, client_port: int) -> str | None:
    """The state of the server's socket of one connection (None once it is gone)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if int(local.split(":")[1], 16) == server_port and (
            int(remote.split(":")[1], 16) == client_port
        ):
            return state
    return None


async def test_an_answer_never_read_is_dropped_by_the_kernel_not_kept_for_good(
    tmp_path: Path,
) -> None:
    """Closed with an answer its client never reads (at the keep-alive timeout here; to make
    room under the cap alike), a connection stayed in FIN_WAIT1, answer and all, for as long
    as the client liked: 40 of them held 33 MB of kernel memory past a cap of 8. Nothing
    acknowledged for --write-timeout-s, the kernel drops it (TCP_USER_TIMEOUT)."""
    served = await start(*serve_args(tmp_path, "--header-timeout-s", "1", "--write-timeout-s", "1"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # the answer cannot all fit
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", served.port))
        await loop.sock_sendall(sock, b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        client_port = sock.getsockname()[1]
        async with asyncio.timeout(READ_TIMEOUT_S):
            while server_side_state(served.port, client_port) is not None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # the kernel's table has no event to wait on
    finally:
        sock.close()
        assert await stop(served) == 0


@pytest.mark.parametrize(
    "version",
    ["1.1", "1.0\r\nConnection: keep-alive", "1.1\r\nConnection: close", "1.0"],
    ids=["keep-alive", "1.0-keep-alive", "close", "1.0"],
)
async def test_an_answer_its_client_reads_slowly_is_sent_whole(
    served: Served, version: str
) -> None:
    """However the connection goes on or ends after it, an answer read slowly (past the
    --header-timeout-s of 1 s here) arrives whole: a client that reads is never cut."""
    document = resources.files("research_service.web").joinpath(*DOCUMENT_FILE).read_bytes()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    received = bytearray()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", served.port))
        request = f"GET /openapi.json HTTP/{version}\r\nHost: 127.0.0.1\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        async with asyncio.timeout(READ_TIMEOUT_S):
            while len(received) < len(document) and (chunk := await loop.sock_recv(sock, 4096)):
                received += chunk
                await asyncio.sleep(0.04)  # the client's pace: about 100 KB a second
    finally:
        sock.close()
    assert bytes(received).partition(b"\r\n\r\n")[2] == document


@pytest.mark.parametrize(
    "path",
    [
        "/v1/runs",
        # Every endpoint that reads a body: a connection that never finishes one would hold
        # its slot for good (busy connections are never closed to make room), and sign-in
        # needs no key.
        "/v1/runs/0123456789abcdef/cancel",
        "/v1/runs/0123456789abcdef/plan",
        "/v1/session",
    ],
)
async def test_a_body_sent_slowly_gets_408_and_the_connection_closes(
    served: Served, path: str
) -> None:
    raw = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Content-Length: 1000\r\n\r\n{"
    ).encode()
    status, headers, body = split_response(await exchange(served.port, raw))
    assert status == 408
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    problem = json.loads(body)
    assert problem["type"].endswith("/body-timeout")
    assert "did not arrive within 1 s" in problem["detail"]
    # Nothing was created, and the service goes on serving.
    async with httpx.AsyncClient() as client:
        listing = await client.get(f"{served.base}/v1/runs")
    assert listing.json()["runs"] == []


# --- malformed HTTP -----------------------------------------------------------------------

MALFORMED = [
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"S3CRET" * 1500 + b"\r\n\r\n",
        431,
        "request-too-large",
        id="header-over-8190-bytes",
    ),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-S3CRET-%d: 1\r\n" % n for n in range(210))
        + b"\r\n",
        431,
        "request-too-large",
        id="210-headers",
    ),
    pytest.param(
        b"GET /S3CRET" + b"a" * 8200 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        "uri-too-long",
        id="8-kb-url",
    ),
    pytest.param(b"\x16\x03\x01S3CRET\r\n\r\n", 400, "malformed-request", id="tls-to-http-port"),
    pytest.param(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nS3CRET",
        400,
        "malformed-request",
        id="two-content-lengths",
    ),
]


@pytest.mark.parametrize(("raw", "status", "slug"), MALFORMED)
async def test_malformed_http_gets_a_short_problem_and_one_quiet_log_line(
    served: Served, raw: bytes, status: int, slug: str
) -> None:
    before = len(served.log)
    got_status, headers, body = split_response(await exchange(served.port, raw))
    assert got_status == status
    assert headers["content-type"] == "application/problem+json"
    assert headers["server"] == "research-service"
    assert (headers["x-content-type-options"], headers["cache-control"]) == ("nosniff", "no-store")
    problem = json.loads(body)
    assert problem["type"].endswith("/" + slug)
    assert problem["status"] == status
    assert b"S3CRET" not in body  # the request is never echoed
    assert len(body) < 300
    # The next request is logged after this one's line, so its line is complete.
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{served.base}/healthz")).status_code == 200
    await served.wait_log(rb'"GET /healthz HTTP/1.1" 200[^\n]*\n', since=before)
    lines = bytes(served.log[before:]).decode().splitlines()
    about_it = [line for line in lines if '/healthz HTTP/1.1" 200' not in line]
    assert len(about_it) == 1, about_it
    assert " INFO " in about_it[0]
    assert "malformed request" in about_it[0]
    assert "S3CRET" not in about_it[0]
    assert "Traceback" not in served.log.decode()


def with_body(head: str, body: bytes, **headers: str) -> bytes:
    """A request: `head` (`POST /v1/runs`), `headers`, and `body` with its Content-Length."""
    lines = [f"{head} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


UNDECODABLE = [
    pytest.param("POST /v1/runs", "deflate", 400, id="deflate-body-read"),
    pytest.param("POST /v1/runs", "gzip", 400, id="gzip-body-read"),
    pytest.param("POST /v1/runs/0123456789abcdef/cancel", "gzip", 400, id="gzip-cancel"),
    # A body no handler reads is never decoded (tests/test_compressed_bodies.py).
]


@pytest.mark.parametrize(("head", "encoding", "status"), UNDECODABLE)
async def test_a_body_its_content_encoding_cannot_decode_is_the_clients_fault(
    served: Served, head: str, encoding: str, status: int
) -> None:
    before = len(served.log)
    raw = with_body(
        head,
        b"S3CRET, not " + encoding.encode(),
        Content_Type="application/json",
        Content_Encoding=encoding,
    )
    got_status, headers, body = split_response(await exchange(served.port, raw))
    assert got_status == status
    if status == 400:
        assert headers["content-type"] == "application/problem+json"
        assert headers["connection"] == "close"
        problem = json.loads(body)
        assert problem["type"].endswith("/malformed-request")
        assert problem["detail"] == (
            f"the request body cannot be read: Can not decode content-encoding: {encoding}"
        )
    # One quiet line says why the connection was closed; nothing logged as an error.
    await served.wait_log(rb"request body cannot be read: [^\n]*\n", since=before)
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{served.base}/healthz")).status_code == 200
    await served.wait_log(rb'"GET /healthz HTTP/1.1" 200[^\n]*\n', since=before)
    logged = bytes(served.log[before:]).decode()
    assert " ERROR " not in logged
    assert "Traceback" not in logged
    assert "S3CRET" not in logged


async def test_no_response_names_the_software_versions(served: Served) -> None:
    async with httpx.AsyncClient() as client:
        responses = [
            await client.get(f"{served.base}/healthz"),
            await client.get(f"{served.base}/v1/runs/0123456789abcdef"),
            await client.get(f"{served.base}/nowhere"),
            await client.get(f"{served.base}/"),
            await client.post(f"{served.base}/v1/runs", content=b"{", headers={"X": "y"}),
        ]
    for response in responses:
        assert response.headers["server"] == "research-service"
        assert not re.search(r"aiohttp|Python", str(response.headers)), response.headers


# --- start-up -----------------------------------------------------------------------------


async def test_a_port_in_use_is_a_one_line_start_up_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "research_service", "serve", "--port", str(port)),
            *("--data-dir", str(tmp_path / "data"), "--corpus", str(CORPUS)),
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(60):
            _, err = await process.communicate()
    assert process.returncode == 2
    lines = err.decode().strip().splitlines()
    assert lines == [
        f"research-service: port {port} on 127.0.0.1 is already in use by another process; "
        "stop it or choose another --port"
    ]
    # It failed before doing any start-up work: no run store was created.
    assert not (tmp_path / "data" / "runs.sqlite3").exists()


async def test_the_open_files_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    service = await start(*serve_args(tmp_path), preexec_fn=open_files_limit(256, 1024), timeout=60)
    try:
        limits = await asyncio.to_thread(Path(f"/proc/{service.process.pid}/limits").read_text)
        (line,) = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert line.split()[3:5] == ["1024", "1024"]
        await service.wait_log(rb"up to 768 connections; open-files limit 1024")
    finally:
        assert await stop(service) == 0


# --- descriptor exhaustion ----------------------------------------------------------------


async def open_slow(port: int) -> socket.socket:
    """A connection that sends half a request head and then nothing."""
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    sock.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    return sock


async def test_300_slow_connections_under_ulimit_256_leave_streams_and_healthz_working(
    tmp_path: Path,
) -> None:
    # 60 ms a word: the run streams for several seconds, across the flood.
    args = serve_args(tmp_path, "--token-delay-ms", "60", "--header-timeout-s", "30")
    service = await start(*args, preexec_fn=open_files_limit(256, 256), timeout=60)
    slow: list[socket.socket] = []
    try:
        await service.wait_log(rb"up to 192 connections; open-files limit 256")
        async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as client:
            created = await client.post(
                f"{service.base}/v1/runs", json={"question": "Photosynthesis?"}
            )
            events_url = service.base + created.json()["events_url"]
            first = await listen(client, events_url, stop=lambda e: e.event == "token")
            stream = asyncio.create_task(
                listen(client, events_url, last_event_id=first.ids[-1], timeout=60)
            )
            slow = list(await asyncio.gather(*(open_slow(service.port) for _ in range(300))))
            # /healthz on a new connection is served while the slow ones hold their slots.
            async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as fresh:
                for _ in range(5):
                    health = await fresh.get(f"{service.base}/healthz")
                    assert health.json() == {"status": "ok"}
            rest = await stream
        # The stream went on through the flood and ended with its done, nothing lost.
        assert rest.last[1]["status"] == "completed"
        assert first.text() + rest.text() == rest.last[1]["answer"]
        await service.wait_log(
            rb"WARNING [^\n]*connections at the limit[^\n]*idle connections closed"
        )
    finally:
        for sock in slow:
            sock.close()
        assert await stop(service) == 0
    log = service.log.decode()
    assert "Traceback" not in log
    assert "out of system resource" not in log
    assert len(log) < 20_000


async def test_when_every_connection_is_busy_new_ones_get_503(tmp_path: Path) -> None:
    args = serve_args(tmp_path, "--token-delay-ms", "50", "--max-connections", "3")
    service = await start(*args, timeout=60)
    closing: list[asyncio.StreamWriter] = []
    try:
        async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as client:
            created = await client.post(f"{service.base}/v1/runs", json={"question": "Leaves?"})
            run_id = created.json()["id"]
        events = f"/v1/runs/{run_id}/events"
        streams = [await asyncio.open_connection("127.0.0.1", service.port) for _ in range(3)]
        closing.extend(writer for _, writer in streams)
        for reader, writer in streams:
            writer.write(f"GET {events} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            await writer.drain()
            async with asyncio.timeout(READ_TIMEOUT_S):
                await reader.readuntil(b"event: phase")
        status, headers, body = split_response(
            await exchange(service.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        )
        assert status == 503
        assert headers["retry-after"] == "1"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
        assert json.loads(body)["type"].endswith("/too-many-connections")
        # The busy streams were not touched: each reads on to the run's done.
        for reader, _ in streams:
            async with asyncio.timeout(READ_TIMEOUT_S):
                await reader.readuntil(b"event: done")
        await service.wait_log(rb"WARNING [^\n]*1 new connections refused")
    finally:
        for writer in closing:
            writer.close()
        assert await stop(service) == 0


async def test_the_descriptor_table_is_sized_for_the_open_files_limit_at_start_up(
    tmp_path: Path,
) -> None:
    # Grown later, by a burst's accept(), each doubling blocked the event loop for 10-15 ms.
    service = await start(*serve_args(tmp_path), preexec_fn=open_files_limit(256, 4096), timeout=60)
    try:
        status = await asyncio.to_thread(Path(f"/proc/{service.process.pid}/status").read_text)
        (size,) = re.findall(r"^FDSize:\s+(\d+)$", status, re.MULTILINE)
        assert int(size) >= 4096
        # The descriptor that grew it is closed again: none sits at the top.
        fds = await asyncio.to_thread(
            lambda: list(Path(f"/proc/{service.process.pid}/fd").iterdir())
        )
        assert max(int(fd.name) for fd in fds) < 1024
        # Start-up's heap is out of the collector's reach, its full collections counted.
        async with httpx.AsyncClient(timeout=READ_TIMEOUT_S) as client:
            metrics = (await client.get(f"{service.base}/metrics")).text
        scraped = metric_samples(metrics)
        assert scraped["research_gc_frozen_objects"] > 10_000
        assert scraped["research_gc_full_collections_total"] >= 1  # the freeze's own
        # The quiet ones are among them; the freeze's own was not one.
        quiet = scraped["research_gc_quiet_collections_total"]
        assert 0 <= quiet < scraped["research_gc_full_collections_total"]
    finally:
        assert await stop(service) == 0
