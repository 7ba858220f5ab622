"""SIGTERM to a real `serve` process: runs end with `done`, and a stalled client cannot hold it."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.fake_openai import FakeOpenAI, Reply, mentions, wants_json
from tests.openapi_check import check_event
from tests.served import CORPUS, Served, start, stop

GRACE_S = 5.0
PLAN = {"queries": ["leaves", "light"]}
#: About 4 MB of answer: far more than the kernel buffers between the service and a client
#: that stopped reading, so that client's stream stalls.
HUGE_PIECES = ["x" * 1000 + " "] * 4000
#: 20 pieces a second for 100 s: these runs are still streaming when SIGTERM arrives.
SLOW_PIECES = [f"w{n} " for n in range(2000)]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(strict=False) as server:
        server.script.always(Reply(json.dumps(PLAN), when=wants_json))
        server.script.always(Reply(pieces=HUGE_PIECES, when=mentions("Huge")))
        server.script.always(Reply(pieces=SLOW_PIECES, interval=0.05))
        yield server


async def start_service(fake: FakeOpenAI, tmp_path: Path) -> Served:
    return await start(
        *("--port", "0", "--data-dir", str(tmp_path / "data")),
        *("--corpus", str(CORPUS), "--llm", "openai", "--openai-base-url", fake.base_url),
        *("--max-tokens-per-run", "100000000", "--shutdown-grace-s", str(GRACE_S)),
        env={"OPENAI_API_KEY": "test-key"},
        timeout=60,
    )


@dataclass
class Reader:
    """A client that reads a stream to its end, noting when the first token arrived."""

    url: str
    streaming: asyncio.Event = field(default_factory=asyncio.Event)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    async def read(self, client: httpx.AsyncClient) -> None:
        async with aconnect_sse(client, "GET", self.url) as source:
            async for sse in source.aiter_sse():
                if sse.data:
                    data = json.loads(sse.data)
                    check_event(sse.event, data)  # docs/schemas, as tests.sse.listen does
                    self.events.append((sse.event, data))
                if sse.event == "token":
                    self.streaming.set()


async def stalled_listener(port: int, path: str) -> socket.socket:
    """A client that asks for a stream and never reads a byte of it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    sock.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return sock


async def test_sigterm_ends_runs_for_50_listeners_and_cuts_a_stalled_one_after_the_grace(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    service = await start_service(fake, tmp_path)
    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        huge = await client.post(f"{service.base}/v1/runs", json={"question": "Huge answer?"})
        huge_events = huge.json()["events_url"]
        stalled = await stalled_listener(service.port, huge_events)
        # Another client reads the huge run to its done: the stalled one is far behind.
        whole = Reader(service.base + huge_events)
        await whole.read(client)
        assert whole.events[-1][1]["status"] == "completed"

        readers = []
        for n in range(5):
            created = await client.post(f"{service.base}/v1/runs", json={"question": f"Q{n}?"})
            readers += [Reader(service.base + created.json()["events_url"]) for _ in range(10)]
        reading = [asyncio.create_task(r.read(client)) for r in readers]
        async with asyncio.timeout(30):
            await asyncio.gather(*(r.streaming.wait() for r in readers))

        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(GRACE_S + 10):
            code = await service.process.wait()
        took = time.monotonic() - started
        await asyncio.gather(*reading, return_exceptions=True)
    stalled.close()
    assert code == 0
    assert took <= GRACE_S + 2, f"exit took {took:.1f} s"
    for reader in readers:
        name, done = reader.events[-1]
        assert name == "done"
        assert done["status"] == "cancelled"
        assert done["error"]["code"] == "shutdown"
    assert service.drain is not None
    await service.drain
    log = service.log.decode()
    assert "Traceback" not in log
    assert "closed 1 connections still open after the 5 s shutdown grace" in log


async def test_sigterm_with_nothing_running_exits_at_once(fake: FakeOpenAI, tmp_path: Path) -> None:
    service = await start_service(fake, tmp_path)
    started = time.monotonic()
    assert await stop(service, signal.SIGTERM) == 0
    assert time.monotonic() - started < GRACE_S
