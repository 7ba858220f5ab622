"""Large runs cannot be amplified: listings are briefs, recordings stream from the store, and
a caught-up listener keeps none of what it was sent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import socket
import sys
import tracemalloc
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from research_service.recordings import finished_recording
from tests.conftest import MakeService, Service

#: About 4 MB of answer in 8,000 token events (an 8 MB recording): a large run.
BIG_PIECES = [f"{'z' * 500}{n} " for n in range(8000)]
LISTING_ENTRY_KEYS = {
    "id",
    "status",
    "question",
    "options",
    "created_at",
    "finished_at",
    "error_code",
    "event_count",
    "source_count",
    "awaiting",
    "url",
    "events_url",
}
#: The documented bound of one listing entry (docs/api.md): a 2,000-character question
#: of characters JSON must escape as \\u00XX, plus the fixed fields.
MAX_ENTRY_BYTES = 13_000


async def big_runs(service: Service, client: httpx.AsyncClient, count: int) -> list[str]:
    service.llm.pieces = BIG_PIECES
    run_ids = []
    for n in range(count):
        run_id = await service.create(client, f"Big question {n}?", max_sources=20)
        await service.wait_done(run_id, timeout=60)
        run_ids.append(run_id)
    return run_ids


async def test_a_listing_holds_briefs_of_bounded_size(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(store="sqlite", max_tokens_per_run=10**7)
    run_ids = await big_runs(service, client, 3)
    worst = "\x01" * 2000  # the longest question, every character escaped in JSON
    held = await service.create(client, worst)  # runs (and is listed) like any other
    await service.wait_done(held, timeout=60)

    # A fresh service on the same store: the runs are listed from the file, not memory.
    await service.server.close()
    fresh = await make_service(store="sqlite", max_tokens_per_run=10**7)
    response = await client.get(fresh.url("/v1/runs"), params={"limit": 100})
    assert response.status_code == 200
    entries: list[dict[str, Any]] = response.json()["runs"]
    assert [e["id"] for e in entries] == [held, *reversed(run_ids)]
    for entry in entries:
        assert set(entry) == LISTING_ENTRY_KEYS
        assert len(json.dumps(entry, ensure_ascii=False)) <= MAX_ENTRY_BYTES
    assert len(response.content) < 4 * MAX_ENTRY_BYTES  # the answers alone are 12 MB

    big = entries[-1]
    snapshot = (await client.get(fresh.url(f"/v1/runs/{big['id']}"))).json()
    assert big["status"] == snapshot["status"] == "completed"
    assert big["event_count"] == snapshot["event_count"]
    assert big["source_count"] == len(snapshot["sources"]) > 0
    assert big["error_code"] is None
    assert big["finished_at"] >= big["created_at"]
    assert big["url"] == f"/v1/runs/{big['id']}"
    assert len(snapshot["answer"]) > 4_000_000


async def test_a_live_run_is_listed_as_running_with_what_it_found_so_far(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.hold_after = 1
    run_id = await service.create(client)
    await service.until_held()
    (entry,) = (await client.get(service.url("/v1/runs"))).json()["runs"]
    assert entry["status"] == "running"
    assert entry["finished_at"] is None
    assert entry["source_count"] == 4
    service.llm.release.set()
    await service.wait_done(run_id)
    (entry,) = (await client.get(service.url("/v1/runs"))).json()["runs"]
    assert entry["status"] == "completed"
    assert entry["finished_at"] is not None


async def test_recordings_stream_without_building_the_run_in_memory(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(store="sqlite", max_tokens_per_run=10**7)
    (run_id,) = await big_runs(service, client, 1)
    store = service.manager.log
    record = await store.get_run(run_id)
    assert record is not None
    expected = finished_recording(record, await store.read(run_id, after=0)).encode()
    url = service.url(f"/v1/runs/{run_id}/recording")

    async def download() -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/x-ndjson; charset=utf-8"
            async for chunk in response.aiter_raw():
                digest.update(chunk)
                size += len(chunk)
        return digest.hexdigest(), size

    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        got = await asyncio.gather(*(download() for _ in range(20)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [(hashlib.sha256(expected).hexdigest(), len(expected))] * 20
    # Twenty downloads of an 8 MB recording: built whole per download (text, then bytes)
    # this peaked near 150 MB here; streamed in 32 KiB chunks each download holds a few
    # chunks on each side of the socket, whatever the run's size.
    assert peak - before < 20 * 2**20, (peak - before, len(expected))


async def test_a_recording_of_an_unfinished_run_is_409(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.hold_after = 1
    run_id = await service.create(client)
    await service.until_held()
    response = await client.get(service.url(f"/v1/runs/{run_id}/recording"))
    assert response.status_code == 409
    assert response.json()["type"].endswith("/run-not-finished")
    service.llm.release.set()
    await service.wait_done(run_id)


async def test_a_caught_up_listener_keeps_none_of_the_events_it_was_sent(
    service: Service, client: httpx.AsyncClient
) -> None:
    """Listeners that caught up on a long live run hold none of its stored events while they
    wait for the next: each would otherwise keep its last page (up to 512 events)."""
    service.llm.pieces = [f"piece{n} " for n in range(1201)]
    service.llm.hold_after = 1200
    run_id = await service.create(client)
    await service.until_held()
    log = service.manager.log
    count = len(await log.read(run_id, after=0))
    (last,) = await log.read(run_id, after=count - 1)
    held_before = sys.getrefcount(last.wire)  # the log's row, `last` and the call's argument
    url = urlsplit(service.url(f"/v1/runs/{run_id}/events"))
    end_of_catch_up = f"id: {last.id}\n".encode()

    async def caught_up() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        writer.write(f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
        received = b""
        while end_of_catch_up not in received:
            chunk = await reader.read(65536)
            assert chunk, "the stream ended before its catch-up did"
            received += chunk
        return writer

    async with asyncio.timeout(30):
        writers = await asyncio.gather(*(caught_up() for _ in range(20)))
    try:
        assert service.manager.stats.open_streams == 20
        held_after = sys.getrefcount(last.wire)  # outside `assert`: pytest's rewrite holds one
        assert held_after == held_before
    finally:
        for writer in writers:
            writer.close()
        service.llm.release.set()
    await service.wait_done(run_id)


async def test_a_run_deleted_while_a_listener_catches_up_ends_its_stream_cleanly(
    make_service: MakeService, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention deletes an ended run while a slow listener is still catching up on it (8 MB,
    far more than the sockets' buffers hold): its stream ends cleanly, with no server error,
    and its reconnect is told the run is gone."""
    service = await make_service(store="sqlite", max_tokens_per_run=10**7)
    (run_id,) = await big_runs(service, client, 1)
    url = urlsplit(service.url(f"/v1/runs/{run_id}/events"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # no autotuning to MBs
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (url.hostname, url.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"Transfer-Encoding: chunked" in head

    assert await service.manager.log.prune(max_age_s=0, max_runs=None) == 1
    async with asyncio.timeout(30):
        body = await reader.read()  # to the end of the stream
    writer.close()
    assert body.endswith(b"\r\n0\r\n\r\n")  # the chunked body's own end
    assert b"event: token" in body
    assert b"event: done" not in body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    again = await client.get(service.url(f"/v1/runs/{run_id}/events"))
    assert again.status_code == 404
    assert again.headers["content-type"] == "application/problem+json"
