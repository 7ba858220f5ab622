"""`research-service ask` and `listen` as child processes against a live or a replayed service."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import signal
import struct
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from research_service.recording import load_recording
from research_service.replay_app import INSTANT, load_recordings, replay_app
from research_service.settings import Settings
from tests import cli_process
from tests.conftest import MakeService, Service
from tests.drop_proxy import DropProxy

RECORDINGS = Path(__file__).parent / "recordings"
PIECES = ["Asyncio ", "gathers ", "awaitables [1]. ", "It ", "returns ", "results [2]."]


@pytest.fixture
async def live(make_service: MakeService) -> Service:
    service = await make_service(retry_ms=50)
    service.llm.pieces = list(PIECES)
    return service


@pytest.fixture
async def replayed() -> AsyncIterator[TestServer]:
    path = RECORDINGS / "builtin_completed.jsonl"
    server = TestServer(replay_app(Settings(), load_recordings([path]), speed=INSTANT))
    await server.start_server()
    yield server
    await server.close()


def base(service: Service) -> str:
    return service.url("/").rstrip("/")


def check_json_stream(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every line is one event; ids count up by one; the tokens spell done.answer exactly."""
    run_id = events[0]["id"].split(":")[0]
    assert [e["id"] for e in events] == [f"{run_id}:{n}" for n in range(1, len(events) + 1)]
    assert all(set(e) == {"id", "event", "data"} for e in events)
    assert events[-1]["event"] == "done"
    done: dict[str, Any] = events[-1]["data"]
    assert "".join(e["data"]["text"] for e in events if e["event"] == "token") == done["answer"]
    return done


async def test_ask_streams_a_whole_run_as_a_plain_transcript(live: Service) -> None:
    result = await cli_process.run("ask", "--server", base(live), "How does gather work?")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("run ")
    assert "How does gather work?" in out.splitlines()[0]
    for line in (
        "[planning] 2 queries: alpha | beta",
        "[searching] round 1: 2 queries",
        "[searching] 4 sources in 1 round",
        "[synthesizing] writing the answer from 4 sources",
        "[synthesizing] completed",
        "  [1] alpha result 1",
        "      https://example.org/alpha/1",
    ):
        assert line in out
    assert out.count("".join(PIECES)) == 1
    assert "\ndone: completed in " in out
    assert result.stderr == ""


async def test_ask_json_writes_one_event_per_line_and_nothing_else(live: Service) -> None:
    result = await cli_process.run("ask", "--server", base(live), "--json", "Q?")
    assert result.returncode == 0, result.stderr
    events = result.json_lines()
    done = check_json_stream(events)
    assert done["status"] == "completed"
    assert done["answer"] == "".join(PIECES)
    assert events[0] == {
        "id": events[0]["id"],
        "event": "phase",
        "data": {"phase": "planning", "status": "started", "elapsed_ms": 0},
    }


async def test_quiet_prints_only_the_answer_and_sources(live: Service) -> None:
    result = await cli_process.run("ask", "--server", base(live), "-q", "Q?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("".join(PIECES) + "\n")
    assert "[planning]" not in result.stdout
    assert "run " not in result.stdout
    assert "Sources:\n  [1] alpha result 1" in result.stdout
    assert "the run ended" not in result.stderr  # a completed run is its answer


@pytest.mark.parametrize(
    ("name", "status", "says"),
    [
        ("builtin_failed", 1, "the run ended failed in "),
        ("builtin_cancelled", 3, "the run ended cancelled in "),
    ],
)
async def test_quiet_says_on_stderr_how_a_run_that_did_not_complete_ended(
    name: str, status: int, says: str
) -> None:
    recording = load_recording(RECORDINGS / f"{name}.jsonl")
    app = replay_app(Settings(), load_recordings([RECORDINGS / f"{name}.jsonl"]), speed=INSTANT)
    server = TestServer(app)
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        result = await cli_process.run("listen", recording.run_id, "--server", url, "-q")
    finally:
        await server.close()
    assert result.returncode == status, result.stderr
    error = recording.events[-1].data["error"]
    assert says in result.stderr
    assert f"{error['code']}: {error['message']}" in result.stderr
    assert "the run ended" not in result.stdout  # stdout keeps only the answer and sources


async def test_listen_to_a_replayed_recording_gives_its_events(replayed: TestServer) -> None:
    recording = load_recording(RECORDINGS / "builtin_completed.jsonl")
    server = str(replayed.make_url("")).rstrip("/")
    result = await cli_process.run("listen", recording.run_id, "--server", server, "--json")
    assert result.returncode == 0, result.stderr
    events = result.json_lines()
    check_json_stream(events)
    assert [(e["event"], e["data"]) for e in events] == [
        (e.event, e.data) for e in recording.events
    ]


async def test_listen_plain_to_a_replay_by_panel_link(replayed: TestServer) -> None:
    recording = load_recording(RECORDINGS / "builtin_completed.jsonl")
    link = str(replayed.make_url(f"/?run={recording.run_id}"))
    result = await cli_process.run("listen", link)
    assert result.returncode == 0, result.stderr
    done = recording.events[-1].data
    assert result.stdout.count(done["answer"]) == 1
    assert f"run {recording.run_id}: {recording.question}" in result.stdout
    assert "\ndone: completed" in result.stdout


async def test_listen_by_events_url_of_a_finished_run(
    live: Service, client: httpx.AsyncClient
) -> None:
    run_id = await live.create(client)
    await live.wait_done(run_id)
    url = live.url(f"/v1/runs/{run_id}/events")
    result = await cli_process.run("listen", url, "--json")
    assert result.returncode == 0, result.stderr
    assert check_json_stream(result.json_lines())["answer"] == "".join(PIECES)


async def test_reconnects_after_a_drop_mid_answer_without_repeating(live: Service) -> None:
    live.llm.hold_after = 3
    proxy = DropProxy("127.0.0.1", live.server.port or 0)
    await proxy.start()
    try:
        cli = await cli_process.start("ask", "--server", proxy.url(), "--json", "Q?")
        last = await cli.json_until(lambda e: e["data"].get("text") == PIECES[2])
        await live.until_held()
        assert await proxy.drop_all() >= 1
        await proxy.wait_accepted(proxy.accepted + 1)  # the reconnect
        live.llm.release.set()
        result = await cli.finish()
    finally:
        await proxy.close()
    assert result.returncode == 0, result.stderr
    done = check_json_stream(result.json_lines())
    assert done["answer"] == "".join(PIECES)
    assert "connection lost" in result.stderr
    assert "reconnecting" in result.stderr
    assert f"after event {last['id']}" in result.stderr  # it resumed after the last it had


async def test_plain_transcript_survives_a_drop_without_duplicated_text(live: Service) -> None:
    live.llm.hold_after = 3
    proxy = DropProxy("127.0.0.1", live.server.port or 0)
    await proxy.start()
    try:
        cli = await cli_process.start("ask", "--server", proxy.url(), "Q?")
        while "[synthesizing] writing" not in await cli.line():
            pass
        await live.until_held()
        assert await proxy.drop_all() >= 1
        await proxy.wait_accepted(proxy.accepted + 1)
        live.llm.release.set()
        result = await cli.finish()
    finally:
        await proxy.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Asyncio ") == 1
    assert "".join(PIECES) in result.stdout
    assert "reconnecting" in result.stderr


async def test_a_failed_run_exits_1(live: Service) -> None:
    live.llm.fail_with = "the model broke"
    result = await cli_process.run("ask", "--server", base(live), "Q?")
    assert result.returncode == 1
    assert "[error] llm_error: " in result.stdout
    assert "done: failed" in result.stdout


async def test_a_cancelled_run_exits_3(live: Service, client: httpx.AsyncClient) -> None:
    live.llm.hold_after = 1
    cli = await cli_process.start("ask", "--server", base(live), "--json", "Q?")
    first = await cli.json_until(lambda e: True)
    await live.until_held()
    run_id = first["id"].split(":")[0]
    assert (await client.post(live.url(f"/v1/runs/{run_id}/cancel"))).status_code == 202
    result = await cli.finish()
    assert result.returncode == 3
    assert result.json_lines()[-1]["data"]["status"] == "cancelled"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ask", "--breadth", "99", "Q?"], "breadth"),
        (["listen", "0123456789abcdef"], "no run with id"),
        (["listen", "not-a-run"], "neither a run id"),
        (["ask", "--llm", "builtin", "Q?"], "--llm set up the in-process service"),
    ],
)
async def test_usage_errors_exit_2_with_a_reason(
    live: Service, args: list[str], message: str
) -> None:
    result = await cli_process.run(*args, RESEARCH_SERVER=base(live))
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


async def test_an_unreachable_service_exits_4(unused_tcp_port: int) -> None:
    server = f"http://127.0.0.1:{unused_tcp_port}"
    result = await cli_process.run("ask", "--server", server, "Q?")
    assert result.returncode == 4
    assert f"cannot reach the service at {server} (" in result.stderr


async def test_ctrl_c_detaches_and_the_run_goes_on(
    live: Service, client: httpx.AsyncClient
) -> None:
    live.llm.hold_after = 1
    cli = await cli_process.start("ask", "--server", base(live), "--json", "Q?")
    first = await cli.json_until(lambda e: True)
    await live.until_held()
    cli.proc.send_signal(signal.SIGINT)
    result = await cli.finish()
    assert result.returncode == 130
    run_id = first["id"].split(":")[0]
    assert f"detached; run {run_id} goes on" in result.stderr
    live.llm.release.set()
    await live.wait_done(run_id)
    assert (await client.get(live.url(f"/v1/runs/{run_id}"))).json()["status"] == "completed"


async def test_ctrl_c_with_cancel_on_exit_cancels_the_run(
    live: Service, client: httpx.AsyncClient
) -> None:
    live.llm.hold_after = 1
    cli = await cli_process.start("ask", "--server", base(live), "--json", "--cancel-on-exit", "Q")
    first = await cli.json_until(lambda e: True)
    await live.until_held()
    cli.proc.send_signal(signal.SIGINT)
    result = await cli.finish()
    assert result.returncode == 130
    run_id = first["id"].split(":")[0]
    assert f"run {run_id} is cancelled" in result.stderr
    await live.wait_done(run_id)
    assert (await client.get(live.url(f"/v1/runs/{run_id}"))).json()["status"] == "cancelled"


async def test_record_writes_the_recording_the_service_would_export(
    live: Service, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "run.jsonl"
    result = await cli_process.run("ask", "--server", base(live), "--record", str(path), "-q", "Q?")
    assert result.returncode == 0, result.stderr
    mine = load_recording(path)  # valid by the format's own reader
    exported = (await client.get(live.url(f"/v1/runs/{mine.run_id}/recording"))).text
    theirs = [json.loads(line) for line in exported.splitlines()]
    assert mine.header == {**theirs[0], "service_version": mine.header["service_version"]}
    assert [(e.seq, e.event, e.data) for e in mine.events] == [
        (e["seq"], e["event"], e["data"]) for e in theirs[1:]
    ]
    # t_ms follows the run's own clock where an event carries it (never behind it).
    assert mine.events[0].t_ms == 0
    assert mine.events[-1].t_ms >= mine.events[-1].data["timings_ms"]["total"]
    for event in mine.events:
        if event.event == "phase":
            assert event.t_ms >= event.data["elapsed_ms"]


async def test_ask_without_server_runs_an_in_process_service(tmp_path: Path) -> None:
    corpus = Path(__file__).parent / "data" / "corpus"
    result = await cli_process.run(
        "ask",
        "--json",
        "--corpus",
        str(corpus),
        "--data-dir",
        str(tmp_path / "data"),
        "Who created Python and when was it first released?",
    )
    assert result.returncode == 0, result.stderr
    done = check_json_stream(result.json_lines())
    assert done["status"] == "completed"
    assert "1991" in done["answer"]
    assert "in-process service" in result.stderr


def _read_terminal(fd: int) -> bytes:
    """Everything the child wrote to its terminal, until it closed it."""
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child side of the terminal is closed
            return out
        if not chunk:
            return out
        out += chunk


async def test_on_a_terminal_the_live_display_ends_with_a_linked_report(
    replayed: TestServer,
) -> None:
    """In a real pseudo-terminal: the rich display, its hyperlinks, then the whole report."""
    recording = load_recording(RECORDINGS / "builtin_completed.jsonl")
    server = str(replayed.make_url("")).rstrip("/")
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "research_service",
        "listen",
        recording.run_id,
        "--server",
        server,
        stdin=terminal,
        stdout=terminal,
        stderr=asyncio.subprocess.PIPE,
        env=cli_process.child_env(TERM="xterm-256color", COLUMNS="100", LINES="40"),
    )
    os.close(terminal)
    try:
        async with asyncio.timeout(cli_process.TIMEOUT_S):
            raw = await asyncio.to_thread(_read_terminal, controller)
            assert proc.stderr is not None
            assert await proc.wait() == 0, (await proc.stderr.read()).decode()
    finally:
        os.close(controller)
    output = raw.decode()
    assert "\x1b]8;" in output  # sources and citations are terminal hyperlinks
    visible = " ".join(re.sub(r"\x1b\]8;[^\x1b]*\x1b\\|\x1b\[[0-9;?]*[A-Za-z]", "", output).split())
    done = recording.events[-1].data
    assert " ".join(done["answer"].split()) in visible
    assert "✓ Planning" in visible
    assert "✓ Synthesizing" in visible
    for source in done["sources"]:
        assert f"[{source['id']}] {source['title']}" in visible
    assert "completed in" in visible


async def test_an_unwritable_recording_fails_before_a_run_starts(
    live: Service, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    path = tmp_path / "missing" / "run.jsonl"
    result = await cli_process.run("ask", "--server", base(live), "--record", str(path), "Q?")
    assert result.returncode == 1
    assert f"cannot write the recording {path}" in result.stderr
    assert (await client.get(live.url("/v1/runs"))).json()["runs"] == []


async def test_no_recording_is_left_behind_for_a_run_that_does_not_exist(
    live: Service, tmp_path: Path
) -> None:
    path = tmp_path / "run.jsonl"
    result = await cli_process.run(
        "listen", "0123456789abcdef", "--server", base(live), "--record", str(path)
    )
    assert result.returncode == 2
    assert not path.exists()


# --- servers that are busy, or not a research-service at all --------------------------------

BUSY_RUN = "0123456789abcdef"


class BusyThenFree:
    """A stand-in service: `POST /v1/runs` is a 429 (Retry-After: 0) `busy` times, then a run."""

    def __init__(self, busy: int) -> None:
        self.busy = busy
        self.posts = 0

    async def create(self, request: web.Request) -> web.Response:
        self.posts += 1
        if self.posts <= self.busy:
            return web.json_response(
                {"status": 429, "detail": "2 runs are active, the limit is 2; retry in 5 s"},
                status=429,
                headers={"Retry-After": "0"},
                content_type="application/problem+json",
            )
        body = await request.json()
        run = {"id": BUSY_RUN, "question": body["question"], "status": "queued"}
        return web.json_response(run | {"events_url": f"/v1/runs/{BUSY_RUN}/events"}, status=201)

    async def events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        done = json.dumps({"status": "completed", "answer": "", "sources": []})
        await response.write(f"id: {BUSY_RUN}:1\nevent: done\ndata: {done}\n\n".encode())
        return response

    async def serve(self) -> TestServer:
        app = web.Application()
        app.router.add_post("/v1/runs", self.create)
        app.router.add_get(f"/v1/runs/{BUSY_RUN}/events", self.events)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        return server


async def test_ask_waits_out_a_busy_service_saying_so_on_stderr() -> None:
    stand_in = BusyThenFree(busy=2)
    server = await stand_in.serve()
    try:
        url = str(server.make_url("")).rstrip("/")
        result = await cli_process.run("ask", "--server", url, "--json", "Q?")
    finally:
        await server.close()
    assert result.returncode == 0, result.stderr
    assert stand_in.posts == 3
    busy = "research-service: the service is busy (2 runs are active, the limit is 2; retry in 5 s)"
    assert result.stderr.splitlines() == [
        f"{busy}; trying again in 0 s (attempt 2 of 4)",
        f"{busy}; trying again in 0 s (attempt 3 of 4)",
    ]
    assert result.json_lines()[-1]["event"] == "done"


async def test_ask_gives_up_on_a_service_that_stays_busy_with_status_2() -> None:
    stand_in = BusyThenFree(busy=100)
    server = await stand_in.serve()
    try:
        url = str(server.make_url("")).rstrip("/")
        result = await cli_process.run("ask", "--server", url, "Q?")
    finally:
        await server.close()
    assert result.returncode == 2
    assert stand_in.posts == 4
    assert result.stderr.splitlines()[-1] == (
        "research-service: 2 runs are active, the limit is 2; retry in 5 s "
        "(still busy after 4 attempts)"
    )


async def test_listen_to_a_server_that_is_not_a_research_service_exits_4() -> None:
    server = TestServer(web.Application(), host="127.0.0.1")  # every path: aiohttp's 404
    await server.start_server()
    try:
        url = str(server.make_url("")).rstrip("/")
        result = await cli_process.run("listen", "0123456789abcdef", "--server", url)
    finally:
        await server.close()
    assert result.returncode == 4
    assert "which is not a research-service's answer; check --server" in result.stderr


class EndedUnseen:
    """A stand-in service whose run's `done` a listener never gets: its stream stops after
    three events; resumed from the third, it is `204`, the stored `done` having that seq (a
    crash lost the events after it; docs/protocol.md, "After a crash")."""

    def __init__(self) -> None:
        self.resumed_from: list[str | None] = []

    def snapshot(self, status: str, error: dict[str, str] | None) -> dict[str, Any]:
        return {
            "id": BUSY_RUN,
            "question": "Q?",
            "status": status,
            "error": error,
            "events_url": f"/v1/runs/{BUSY_RUN}/events",
        }

    async def run(self, request: web.Request) -> web.Response:
        if not self.resumed_from:
            return web.json_response(self.snapshot("running", None))
        error = {"code": "interrupted", "message": "the service stopped while the run was going"}
        return web.json_response(self.snapshot("failed", error))

    async def events(self, request: web.Request) -> web.StreamResponse:
        last = request.headers.get("Last-Event-ID")
        self.resumed_from.append(last)
        if last is not None:
            return web.Response(status=204)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        phase = json.dumps({"phase": "planning", "status": "started", "elapsed_ms": 1})
        await response.write(
            f"retry: 10\n\nid: {BUSY_RUN}:1\nevent: phase\ndata: {phase}\n\n".encode()
        )
        for seq, text in ((2, "Half"), (3, " an answer")):
            token = json.dumps({"text": text})
            await response.write(f"id: {BUSY_RUN}:{seq}\nevent: token\ndata: {token}\n\n".encode())
        return response  # the connection ends without a `done`

    async def serve(self) -> TestServer:
        app = web.Application()
        app.router.add_get(f"/v1/runs/{BUSY_RUN}", self.run)
        app.router.add_get(f"/v1/runs/{BUSY_RUN}/events", self.events)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        return server


@pytest.mark.parametrize("mode", ["--plain", "--json", "-q"])
async def test_a_run_whose_done_never_arrives_is_said_to_have_ended_as_its_snapshot_says(
    mode: str,
) -> None:
    stand_in = EndedUnseen()
    server = await stand_in.serve()
    try:
        url = str(server.make_url("")).rstrip("/")
        result = await cli_process.run("listen", BUSY_RUN, "--server", url, mode)
    finally:
        await server.close()
    assert stand_in.resumed_from == [None, f"{BUSY_RUN}:3"]
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"research-service: run {BUSY_RUN} ended failed (said by its snapshot): interrupted: "
        "the service stopped while the run was going"
    )
