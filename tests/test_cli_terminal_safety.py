"""What reaches a person's terminal: inert text from documents, a restored terminal on SIGTERM,
a quiet Ctrl-C at any time; the `ask` and `listen` commands as child processes, some in a pty."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from research_service.client.output import json_line
from research_service.providers.base import SearchHit
from research_service.replay_app import INSTANT, load_recordings, replay_app
from research_service.settings import Settings
from tests import cli_process
from tests.conftest import MakeService, Service

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = Path(__file__).parent / "recordings"
#: Sequences a document or a page could hold: retitle the terminal, clear it, recolour it
#: (7-bit, and C1's one-byte CSI).
RETITLE = "\x1b]0;PWNED\x07"
CLEAR = "\x1b[2J"
RED = "\x1b[31m"
C1_CSI = "\x9b"
QUERIES = [f"widgets {RETITLE}", f"frobnicate {C1_CSI}31m"]
PIECES = [f"Set frobnicate {CLEAR}", f"to true {RED}", "[1]."]
#: A right-to-left override: what follows shows reversed ("fdp.exe" reads "exe.pdf").
RLO = "\u202e"
TITLE = f"Widgets {RETITLE} guide{RLO}fdp.exe"
#: Any character a terminal acts on, but the line breaks and tabs text is made of, and the
#: bidirectional overrides and isolates that reorder a line.
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
async def hostile(make_service: MakeService) -> Service:
    """A service whose plan, search results and answer carry terminal escape sequences."""
    service = await make_service(retry_ms=50)
    service.llm.queries = list(QUERIES)
    service.llm.pieces = list(PIECES)
    hit = SearchHit(
        title=TITLE,
        url=f"https://example.org/widgets{RETITLE}",
        snippet=f"frobnicate {CLEAR}",
        score=1.0,
    )
    service.search.results = {query: [hit] for query in QUERIES}
    return service


def base(service: Service) -> str:
    return service.url("/").rstrip("/")


def assert_inert(text: str) -> None:
    """No control character but line breaks and tabs; the escapes are shown, as `\\x1b`."""
    assert CONTROL.search(text) is None, repr(CONTROL.findall(text))


@pytest.mark.parametrize("mode", ["--plain", "-q"])
async def test_plain_and_quiet_show_escape_sequences_inert(hostile: Service, mode: str) -> None:
    result = await cli_process.run("ask", "--server", base(hostile), mode, "Q?")
    assert result.returncode == 0, result.stderr
    assert_inert(result.stdout)
    assert "Set frobnicate \\x1b[2Jto true \\x1b[31m[1]." in result.stdout
    assert "Widgets \\x1b]0;PWNED\\x07 guide\\u202efdp.exe" in result.stdout
    if mode == "--plain":
        assert "widgets \\x1b]0;PWNED\\x07 | frobnicate \\x9b31m" in result.stdout


async def test_json_keeps_the_exact_strings_escaped_as_json(hostile: Service) -> None:
    result = await cli_process.run("ask", "--server", base(hostile), "--json", "Q?")
    assert result.returncode == 0, result.stderr
    assert_inert(result.stdout)  # json escapes C0; DEL and C1 are escaped too
    assert "\\u009b" in result.stdout
    events = result.json_lines()
    planned = next(e for e in events if e["data"].get("status") == "completed")
    assert planned["data"]["queries"] == QUERIES
    done = events[-1]["data"]
    assert done["answer"] == "".join(PIECES)
    assert done["sources"][0]["title"] == TITLE


async def test_an_error_message_is_shown_inert(hostile: Service) -> None:
    hostile.llm.fail_with = f"the model broke {RETITLE}"
    result = await cli_process.run("ask", "--server", base(hostile), "Q?")
    assert result.returncode == 1
    assert_inert(result.stdout)
    assert "the model broke \\x1b]0;PWNED\\x07" in result.stdout


@pytest.fixture
async def hostile_problems() -> AsyncIterator[str]:
    """A server whose problem details carry escape sequences (every path is a 404)."""

    async def not_found(request: web.Request) -> web.Response:
        problem = {"status": 404, "detail": f"no such run {RETITLE}{CLEAR}"}
        return web.json_response(problem, status=404, content_type="application/problem+json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_messages_on_stderr_are_inert(hostile_problems: str) -> None:
    result = await cli_process.run("listen", "0123456789abcdef", "--server", hostile_problems)
    assert result.returncode == 2
    assert_inert(result.stderr)
    assert "no such run \\x1b]0;PWNED\\x07\\x1b[2J" in result.stderr


async def test_a_corpus_document_with_escapes_is_shown_inert(tmp_path: Path) -> None:
    """The reported case: `ask --corpus DIR --plain` over a file that holds escape sequences."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "widgets.md").write_text(
        f"# Widgets {RETITLE} guide {C1_CSI}31m\n\nWidgets are configured with the frobnicate "
        f"setting {CLEAR} which clears nothing. To configure widgets, set frobnicate to true "
        f"{RED} in the config file.\n",
        encoding="utf-8",
    )
    result = await cli_process.run(
        *("ask", "--corpus", str(corpus), "--data-dir", str(tmp_path / "data"), "--plain"),
        "How do I configure widgets?",
    )
    assert result.returncode == 0, result.stderr
    assert_inert(result.stdout)
    assert "Widgets \\x1b]0;PWNED\\x07 guide \\x9b31m" in result.stdout
    assert "the frobnicate setting \\x1b[2J" in result.stdout


# --- in a real terminal ------------------------------------------------------------------------


def read_until(fd: int, seen: bytearray, marker: bytes, timeout: float) -> bool:
    """Read the terminal into `seen` until `marker` shows (True) or it closes (False)."""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} on the terminal:\n{seen.decode(errors='replace')}"
        if not select.select([fd], [], [], left)[0]:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed its side
            return False
        if not chunk:
            return False
        seen += chunk
    return True


def visible(raw: bytes) -> str:
    """What a terminal shows of `raw`: without links, cursor moves and colours."""
    text = raw.decode(errors="replace")
    return re.sub(r"\x1b\]8;[^\x1b]*\x1b\\|\x1b\[[0-9;?]*[A-Za-z]", "", text)


async def start_in_terminal(*args: str) -> tuple[asyncio.subprocess.Process, int]:
    """The command with a pseudo-terminal as stdin and stdout (stderr a pipe); its controller."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "research_service",
        *args,
        stdin=terminal,
        stdout=terminal,
        stderr=asyncio.subprocess.PIPE,
        env=cli_process.child_env(TERM="xterm-256color", COLUMNS="120", LINES="40"),
    )
    os.close(terminal)
    return proc, controller


async def test_the_live_display_shows_escape_sequences_inert(hostile: Service) -> None:
    proc, controller = await start_in_terminal("ask", "--server", base(hostile), "Q?")
    seen = bytearray()
    try:
        async with asyncio.timeout(cli_process.TIMEOUT_S):
            await asyncio.to_thread(read_until, controller, seen, b"\0", cli_process.TIMEOUT_S)
            assert proc.stderr is not None
            assert await proc.wait() == 0, (await proc.stderr.read()).decode()
    finally:
        os.close(controller)
    raw = bytes(seen).decode()
    for sequence in (RETITLE, "\x1b]0;", CLEAR, RED, C1_CSI, "\x07"):
        assert sequence not in raw
    assert "\\x1b]0;PWNED\\x07" in raw


async def test_sigterm_restores_the_terminal_and_says_how_to_listen_again(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(retry_ms=50)
    service.llm.hold_after = 1
    proc, controller = await start_in_terminal("ask", "--server", base(service), "Q?")
    seen = bytearray()
    try:
        await service.until_held(timeout=cli_process.TIMEOUT_S)
        await asyncio.to_thread(
            read_until, controller, seen, b"Synthesizing", cli_process.TIMEOUT_S
        )
        assert b"\x1b[?25l" in seen  # the live display hides the cursor
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(cli_process.TIMEOUT_S):
            await asyncio.to_thread(read_until, controller, seen, b"\0", cli_process.TIMEOUT_S)
            assert proc.stderr is not None
            stderr = (await proc.stderr.read()).decode()
            status = await proc.wait()
    finally:
        os.close(controller)
    # While the live display is up, messages are written above it, on the terminal.
    said = " ".join(visible(bytes(seen)).split()) + stderr
    assert status == 143, said
    assert "Traceback" not in said
    match = re.search(r"detached; run ([0-9a-f]{16}) goes on\. Follow it again with: ", said)
    assert match, said
    assert f"research-service listen {match[1]} --server {base(service)}" in said
    assert seen.rfind(b"\x1b[?25h") > seen.rfind(b"\x1b[?25l")  # the cursor is shown again
    service.llm.release.set()
    await service.wait_done(match[1])
    snapshot = (await client.get(service.url(f"/v1/runs/{match[1]}"))).json()
    assert snapshot["status"] == "completed"  # detached: the run went on


# --- Ctrl-C while the command still loads --------------------------------------------------

#: Runs the console script with an import hook that stops in aiohttp's import (a slow disk, a
#: cold cache), says so on stderr, and waits there for a signal.
STOPS_WHILE_LOADING = """
import importlib.abc, runpy, signal, sys

class StopInAiohttp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "aiohttp":
            sys.meta_path.remove(self)
            sys.stderr.write("loading aiohttp\\n")
            sys.stderr.flush()
            signal.pause()
        return None

sys.meta_path.insert(0, StopInAiohttp())
runpy.run_module("research_service", run_name="__main__", alter_sys=True)
"""


async def test_ctrl_c_while_the_command_loads_exits_130_quietly() -> None:
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-c", STOPS_WHILE_LOADING, "ask", "--json", "Q?"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_process.child_env(),
        cwd=ROOT,
    )
    assert proc.stderr is not None
    async with asyncio.timeout(cli_process.TIMEOUT_S):
        assert await proc.stderr.readline() == b"loading aiohttp\n"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = await proc.communicate()
    assert (proc.returncode, stdout, stderr) == (130, b"", b"")


# --- a replay server and plan decisions ----------------------------------------------------


async def test_a_replay_server_refuses_a_plan_decision_as_replay_only_as_documented(
    client: httpx.AsyncClient,
) -> None:
    (recording,) = load_recordings([RECORDINGS / "builtin_reviewed.jsonl"])
    server = TestServer(replay_app(Settings(), [recording], speed=INSTANT))
    await server.start_server()
    try:
        url = str(server.make_url(f"/v1/runs/{recording.run_id}/plan"))
        response = await client.post(url, json={})
    finally:
        await server.close()
    assert response.status_code == 409
    problem_type = response.json()["type"].rsplit("/", 1)[1]
    assert problem_type == "replay-only"
    doc = (ROOT / "docs" / "recordings.md").read_text(encoding="utf-8")
    prose = " ".join(doc.split())
    said = prose.split("A replay server takes no decision:", 1)[1].split(".", 1)[0]
    assert f"`{problem_type}`" in said, said


def test_the_json_printed_reads_back_as_the_exact_strings() -> None:
    value = {"text": "".join(chr(c) for c in range(0x00, 0xA0)) + "\u2028é\u202e\u2067"}
    line = json_line(value)
    assert_inert(line)
    assert json.loads(line) == value
