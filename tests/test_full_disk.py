"""A full disk under a real `serve` process: 503s, the truth in /readyz, durable done, recovery."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from httpx_sse import aconnect_sse

from research_service.client.events import RunEvent
from research_service.client.follow import Follower
from research_service.client.recorder import Recorder
from research_service.events import Event
from research_service.recording import load_recording
from research_service.runs import sqlite_log
from research_service.runs.models import RunRecord
from tests.full_disk import fill, free, small_disk
from tests.openapi_check import check_event
from tests.served import CORPUS, Served, start, stop

GRACE_S = 2.0


@pytest.fixture
def disk(tmp_path: Path) -> AsyncIterator[Path]:
    with small_disk(tmp_path / "disk") as mounted:
        yield mounted


async def serve_on(disk: Path) -> Served:
    return await start(
        *("--port", "0", "--data-dir", str(disk / "data")),
        *("--corpus", str(CORPUS), "--token-delay-ms", "25"),
        *("--shutdown-grace-s", str(GRACE_S)),
        timeout=60,
    )


@dataclass
class Listener:
    """Reads one run's stream, noting each event as it arrives."""

    url: str
    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self, client: httpx.AsyncClient) -> None:
        async with aconnect_sse(client, "GET", self.url) as source:
            async for sse in source.aiter_sse():
                if sse.data:
                    data = json.loads(sse.data)
                    check_event(sse.event, data)  # docs/schemas, as tests.sse.listen does
                    self.events.append((sse.id, sse.event, data))
                    self.arrived.set()

    async def until(self, name: str, **fields: Any) -> None:
        async with asyncio.timeout(30):
            while not any(
                event == name and all(data.get(k) == v for k, v in fields.items())
                for _, event, data in self.events
            ):
                self.arrived.clear()
                await self.arrived.wait()

    @property
    def names(self) -> list[str]:
        return [name for _, name, _ in self.events]


async def start_listened_run(client: httpx.AsyncClient, served: Served) -> tuple[str, Listener]:
    created = await client.post(f"{served.base}/v1/runs", json={"question": "How do leaves work?"})
    assert created.status_code == 201, created.text
    listener = Listener(served.base + created.json()["events_url"])
    return created.json()["id"], listener


async def refuse_until_full(client: httpx.AsyncClient, served: Served) -> httpx.Response:
    """POST runs until the store refuses one (a little slack may remain in its journal)."""
    for n in range(200):
        response = await client.post(f"{served.base}/v1/runs", json={"question": f"Fill {n}?"})
        if response.status_code != 201:
            return response
    raise AssertionError("the store never refused a run on a full disk")


async def fill_mid_run(
    client: httpx.AsyncClient, served: Served, disk: Path
) -> tuple[str, Listener, asyncio.Task[None], httpx.Response]:
    """A run streaming to a listener when the disk fills up, and the store's first refusal."""
    run_id, listener = await start_listened_run(client, served)
    reading = asyncio.create_task(listener.read(client))
    await listener.until("token")
    await fill(disk)
    return run_id, listener, reading, await refuse_until_full(client, served)


async def test_a_full_disk_refuses_runs_holds_done_back_and_recovers(disk: Path) -> None:
    served = await serve_on(disk)
    async with httpx.AsyncClient(timeout=30) as client:
        run_id, listener, reading, refused = await fill_mid_run(client, served, disk)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.headers["retry-after"] == "5"
        problem = refused.json()
        assert problem["type"].endswith("/storage-full")
        assert "is full" in problem["detail"]
        one_shot = await client.get(f"{served.base}/v1/research", params={"q": "One more?"})
        assert one_shot.status_code == 503

        assert (await client.get(f"{served.base}/healthz")).status_code == 200
        ready = await client.get(f"{served.base}/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["store"]["status"] == "failing"
        assert "is full" in ready.json()["detail"]

        # The answer is written, but its done cannot be stored: nobody sees the run end.
        await listener.until("phase", phase="synthesizing", status="completed")
        snapshot = (await client.get(f"{served.base}/v1/runs/{run_id}")).json()
        assert snapshot["status"] == "running"
        assert "done" not in listener.names

        # Space comes back: the done is stored, then delivered; new runs are accepted again.
        await free(disk)
        await listener.until("done")
        await reading
        assert listener.events[-1][2]["status"] == "completed"
        assert (await client.get(f"{served.base}/v1/runs/{run_id}")).json()["status"] == (
            "completed"
        )
        again = await client.post(f"{served.base}/v1/runs", json={"question": "Back?"})
        assert again.status_code == 201
        await served.wait_log(rb"takes writes again")
        ready = await client.get(f"{served.base}/readyz")
        assert ready.status_code == 200
    assert await stop(served) == 0
    log = served.log.decode()
    assert "Traceback" not in log
    assert log.count("stopped taking writes") == 1
    assert '" 500 ' not in log

    # A restart shows what the listener saw.
    restarted = await serve_on(disk)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            after = (await client.get(f"{restarted.base}/v1/runs/{run_id}")).json()
        assert after["status"] == "completed"
        assert after["answer"] == listener.events[-1][2]["answer"]
    finally:
        assert await stop(restarted) == 0


async def test_readyz_recovers_by_itself_once_space_is_back_with_no_request_meanwhile(
    disk: Path,
) -> None:
    """Behind a load balancer a failing node gets no traffic: /readyz alone must see it heal."""
    served = await serve_on(disk)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            await fill(disk)
            assert (await refuse_until_full(client, served)).status_code == 503
            ready = await client.get(f"{served.base}/readyz")
            assert ready.status_code == 503
            assert "is full" in ready.json()["detail"]
            await free(disk)

            async def ready_again() -> bool:
                return (await client.get(f"{served.base}/readyz")).status_code == 200

            async with asyncio.timeout(30):
                while not await ready_again():  # noqa: ASYNC110 - only an answer tells
                    await asyncio.sleep(0.1)
            await served.wait_log(rb"takes writes again")
    finally:
        assert await stop(served) == 0


async def test_sigterm_on_a_full_disk_exits_cleanly_and_a_restart_agrees(disk: Path) -> None:
    served = await serve_on(disk)
    async with httpx.AsyncClient(timeout=30) as client:
        run_id, listener, reading, _ = await fill_mid_run(client, served, disk)
        await listener.until("phase", phase="synthesizing", status="completed")

        started = time.monotonic()
        code = await stop(served, signal.SIGTERM, timeout=GRACE_S + 10)
        took = time.monotonic() - started
        await asyncio.gather(reading, return_exceptions=True)
    assert code == 0
    assert took <= GRACE_S + 2, f"exit took {took:.1f} s"
    log = served.log.decode()
    assert "Traceback" not in log
    assert "end as interrupted at the next start" in log
    assert "done" not in listener.names  # the listener never saw the run end ...

    await free(disk)
    restarted = await serve_on(disk)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            after = (await client.get(f"{restarted.base}/v1/runs/{run_id}")).json()
    finally:
        assert await stop(restarted) == 0
    # ... and after the restart it has ended, as failed: interrupted, never completed.
    assert after["status"] == "failed"
    assert after["error"]["code"] == "interrupted"


async def test_a_listener_that_saw_events_a_crash_lost_is_sent_the_runs_ending(
    disk: Path,
) -> None:
    """The disk fills mid-run, so what the listener sees from then on never reaches the store;
    the process is killed, the disk freed, the service started again. The listener resumes
    from the last event it saw, past the stored log whose ending took the lost events' seqs:
    it is sent that ending, `error` `interrupted` then `done`, not a 400. The terminal
    client's follower, which drops events it has seen, takes them too."""
    served = await serve_on(disk)
    async with httpx.AsyncClient(timeout=30) as client:
        run_id, listener, reading, _ = await fill_mid_run(client, served, disk)
        await listener.until("phase", phase="synthesizing", status="completed")
        assert await stop(served, signal.SIGKILL) == -signal.SIGKILL
        await asyncio.gather(reading, return_exceptions=True)
    seen = listener.events[-1][0]
    await free(disk)
    restarted = await serve_on(disk)
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            stored = await client.get(f"{restarted.base}/v1/runs/{run_id}/events")
            snapshot = (await client.get(f"{restarted.base}/v1/runs/{run_id}")).json()
            resumed = await client.get(
                f"{restarted.base}/v1/runs/{run_id}/events", headers={"Last-Event-ID": seen}
            )
        async with aiohttp.ClientSession() as session:
            follower = Follower(
                session, f"{restarted.base}/v1/runs/{run_id}/events", print, last_id=seen
            )
            followed = [event async for event in follower.events()]
    finally:
        assert await stop(restarted) == 0
    ending = [event for event in sse_events(stored.text) if event[1] in ("error", "done")]
    assert resumed.status_code == 200, resumed.text
    assert sse_events(resumed.text) == ending
    (error_id, _, error), (_, _, done) = ending
    assert error["code"] == "interrupted"
    assert (done["status"], done["error"]["code"]) == ("failed", "interrupted")
    # The ending's seqs are ones the listener saw, given to events the crash lost.
    assert int(error_id.split(":")[1]) <= int(seen.split(":")[1])
    assert [(event.id, event.name) for event in followed] == [(i, n) for i, n, _ in ending]
    # A recording of what the listener saw numbers the ending on, and replay takes it.
    recorder = Recorder(disk / "seen.jsonl")
    recorder.start({**snapshot, "id": run_id})
    for event_id, name, data in listener.events:
        recorder.event(RunEvent(event_id, run_id, int(event_id.split(":")[1]), name, data))
    for event in followed:
        recorder.event(event)
    recorder.close()
    recording = load_recording(disk / "seen.jsonl")
    seen_seq = int(seen.split(":")[1])
    assert [(e.seq, e.event) for e in recording.events[-2:]] == [
        (seen_seq + 1, "error"),
        (seen_seq + 2, "done"),
    ]


def sse_events(text: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, name, data) of each event of an SSE body."""
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            found.append((fields["id"], fields["event"], json.loads(fields["data"])))
    return found


@pytest.mark.parametrize("store", ["new", "existing"])
async def test_starting_on_a_full_disk_says_the_disk_is_full(disk: Path, store: str) -> None:
    """A store made before the disk filled once got "cannot be written (disk I/O error)":
    SQLite's own word when it cannot grow the WAL's index."""
    if store == "existing":
        first = await start(
            *("--port", "0", "--data-dir", str(disk / "data"), "--corpus", str(CORPUS)), timeout=60
        )
        assert await stop(first) == 0
    await fill(disk)
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "research_service", "serve", "--port", "0"),
        *("--data-dir", str(disk / "data"), "--corpus", str(CORPUS)),
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await process.communicate()
    assert process.returncode == 2
    text = err.decode()
    assert "Traceback" not in text
    assert "cannot rollback" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("research-service: the disk holding the run store ")
    assert "is full; free some space, or point --data-dir elsewhere" in last


async def test_pending_writes_are_bounded_and_drain_when_space_returns(disk: Path) -> None:
    """Runs wait (not the loop, not memory) once the backlog reaches its bound."""
    bound = 64 * 1024
    store = await sqlite_log.open(disk / "runs.sqlite3", max_pending_bytes=bound)
    try:
        run = RunRecord("a" * 16, "Bounded?")
        await store.create_run(run)
        await fill(disk)
        piece = "y" * 8192

        async def append_all() -> None:
            for seq in range(1, 41):
                event = Event.create(run.id, seq, "token", {"text": piece}, t_ms=seq)
                await store.append(event)

        appending = asyncio.create_task(append_all())
        async with asyncio.timeout(10):
            # The writer exposes no event for these; poll them.
            while store.writer.failure is None or store.unflushed * 8192 < bound:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert not appending.done()  # held at the bound: 40 events are 320 KiB
        assert store.unflushed * 8192 <= bound + 8192
        await free(disk)
        async with asyncio.timeout(10):
            await appending
        await store.flush()
        assert store.unflushed == 0
        assert len(await store.read(run.id, after=0)) == 40
    finally:
        await store.close()
