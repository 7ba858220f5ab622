"""`ask`, `listen`, `plan` and `export` given bad input: one line and the documented exit status.

Each command runs as a real child process; closed or failing descriptors are set up by a shell
(`>&-`, `<&-`) or by handing it /dev/full, as a person at a shell would.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from research_service.recording import load_recording
from tests import cli_process
from tests.cli_process import Finished
from tests.conftest import MakeService, Service
from tests.loopback import refused_port

RUN_ID = "0123456789abcdef"
PIECES = ["Asyncio ", "gathers ", "awaitables [1]."]
#: The command as a shell would start it, with `redirect` applied first (`>&-`, `<&-`).
COMMAND = [sys.executable, "-m", "research_service"]
DEV_FULL = Path("/dev/full")


def is_dev_full() -> bool:
    """Whether /dev/full is here, and still the device (a full disk for every write)."""
    return DEV_FULL.is_char_device()


needs_dev_full = pytest.mark.skipif(not is_dev_full(), reason="no /dev/full here")


@pytest.fixture
async def live(make_service: MakeService) -> Service:
    service = await make_service(retry_ms=50)
    service.llm.pieces = list(PIECES)
    return service


def base(service: Service) -> str:
    return service.url("/").rstrip("/")


async def run_child(
    *args: str, redirect: str = "", timeout: float = cli_process.TIMEOUT_S
) -> Finished:
    """Run the command through `sh -c 'exec "$@" REDIRECT'`; what it wrote and its status."""
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        f'exec "$@" {redirect}',
        "sh",
        *COMMAND,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_process.child_env(),
    )
    async with asyncio.timeout(timeout):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return Finished(proc.returncode, (out or b"").decode(), err.decode())


def one_line(result: Finished) -> str:
    """The one message the command wrote on stderr (no traceback, nothing else)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("research-service: ")
    return lines[0]


async def finished_run(service: Service, client: httpx.AsyncClient) -> str:
    run_id = await service.create(client)
    await service.wait_done(run_id)
    return run_id


# --- 1. --record FILE leaves an existing file alone until the recording begins -------------


KEPT = "my notes, not a recording\n"


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["listen", RUN_ID, "--server", "LIVE"], 2),  # no such run
        (["ask", "--server", "UNREACHABLE", "Q?"], 4),
        (["ask", "--server", "LIVE", "--breadth", "0", "Q?"], 2),  # the service refuses it
    ],
    ids=["unknown-run", "unreachable", "refused-question"],
)
async def test_record_leaves_an_existing_file_alone_when_no_run_begins(
    live: Service, tmp_path: Path, args: list[str], status: int
) -> None:
    path = tmp_path / "keep.jsonl"
    path.write_text(KEPT)
    servers = {"LIVE": base(live), "UNREACHABLE": f"http://127.0.0.1:{refused_port()}"}
    args = [servers.get(a, a) for a in args]
    result = await cli_process.run(*args, "--record", str(path))
    assert result.returncode == status, result.stderr
    assert path.read_text() == KEPT


async def test_record_overwrites_an_existing_file_once_the_run_begins(
    live: Service, tmp_path: Path
) -> None:
    path = tmp_path / "keep.jsonl"
    path.write_text(KEPT * 1000)  # longer than the recording: nothing of it may be left
    result = await cli_process.run("ask", "--server", base(live), "-q", "--record", str(path), "Q")
    assert result.returncode == 0, result.stderr
    recording = load_recording(path)
    assert recording.events[-1].data["answer"] == "".join(PIECES)


@needs_dev_full
async def test_a_recording_that_cannot_be_written_is_one_line_and_status_1(live: Service) -> None:
    result = await cli_process.run(
        "ask", "--server", base(live), "-q", "--record", str(DEV_FULL), "Q?"
    )
    assert result.returncode == 1
    assert "cannot write the recording /dev/full (No space left on device)" in one_line(result)
    assert is_dev_full()  # written to, never replaced


# --- 3. a --server (or listen's URL) that is not a URL: a usage error before any request ----


BAD_SERVERS = {
    "no-scheme-name": ("localhost:{port}", "needs http:// or https://"),
    "no-scheme-address": ("127.0.0.1:{port}", "needs http:// or https://"),
    "port-out-of-range": ("http://127.0.0.1:99999", "Port out of range"),
    "broken-ipv6": ("http://[::1", "Invalid IPv6 URL"),
}
COMMANDS = {
    "ask": ["ask", "--server", "{server}", "Q?"],
    "listen": ["listen", RUN_ID, "--server", "{server}"],
    "plan": ["plan", RUN_ID, "--approve", "--server", "{server}"],
    "export": ["export", RUN_ID, "--server", "{server}"],
}


#: Every bad URL for `ask`; for the others, one without a scheme and one that crashed urlsplit.
CASES = [("ask", bad) for bad in BAD_SERVERS] + [
    (command, bad)
    for command in ("listen", "plan", "export")
    for bad in ("no-scheme-name", "broken-ipv6")
]


@pytest.mark.parametrize(("command", "bad"), CASES)
async def test_a_server_that_is_not_a_service_url_is_a_usage_error(
    live: Service, client: httpx.AsyncClient, command: str, bad: str
) -> None:
    server, says = BAD_SERVERS[bad]
    server = server.format(port=live.server.port)
    result = await cli_process.run(*(a.format(server=server) for a in COMMANDS[command]))
    assert result.returncode == 2
    line = one_line(result)
    assert f"--server {server!r}" in line
    assert says in line
    assert "e.g. http://127.0.0.1:8080" in line
    assert result.stdout == ""
    assert (await client.get(live.url("/v1/runs"))).json()["runs"] == []


@pytest.mark.parametrize("command", ["ask", "listen", "plan"])
async def test_a_server_from_the_environment_is_named_as_such(command: str) -> None:
    target = "Q?" if command == "ask" else RUN_ID
    result = await cli_process.run(command, target, RESEARCH_SERVER="localhost:8080")
    assert result.returncode == 2
    assert "RESEARCH_SERVER 'localhost:8080' needs http:// or https://" in one_line(result)


@pytest.mark.parametrize("command", ["listen", "plan"])
async def test_an_empty_server_variable_is_unset(command: str) -> None:
    """As for ask: the default service is asked (http://127.0.0.1:8080), not `--server ''`."""
    result = await cli_process.run(command, RUN_ID, RESEARCH_SERVER="")
    line = one_line(result)
    assert "needs http:// or https://" not in line
    assert "http://127.0.0.1:8080" in line  # unreachable, or no such run there


@pytest.mark.parametrize("command", ["listen", "plan"])
async def test_a_run_url_that_is_not_a_url_is_a_usage_error(command: str) -> None:
    target = f"http://[::1/v1/runs/{RUN_ID}"
    result = await cli_process.run(command, target)
    assert result.returncode == 2
    line = one_line(result)
    assert f"{target!r} is not a valid URL (Invalid IPv6 URL)" in line
    assert "e.g. http://127.0.0.1:8080/v1/runs/ID/events" in line


# --- 4. stdout that cannot be written: status 1 and one line, never a traceback -------------


OUTPUTS = {
    "ask-json": ["ask", "--server", "{server}", "--json", "Q?"],
    "ask-plain": ["ask", "--server", "{server}", "--plain", "Q?"],
    "ask-quiet": ["ask", "--server", "{server}", "-q", "Q?"],
    "listen": ["listen", "{run_id}", "--server", "{server}"],
    "listen-json": ["listen", "{run_id}", "--server", "{server}", "--json"],
    "plan": ["plan", "{run_id}", "--server", "{server}", "--json"],
}


@pytest.mark.parametrize("command", list(OUTPUTS))
async def test_a_closed_stdout_is_said_before_any_run_starts(
    live: Service, client: httpx.AsyncClient, command: str
) -> None:
    run_id = await finished_run(live, client)
    args = [a.format(server=base(live), run_id=run_id) for a in OUTPUTS[command]]
    result = await run_child(*args, redirect=">&-")
    assert result.returncode == 1
    assert one_line(result) == "research-service: could not write the output: stdout is closed"
    listed = (await client.get(live.url("/v1/runs"))).json()["runs"]
    assert [run["id"] for run in listed] == [run_id]  # ask started no run of its own


@needs_dev_full
@pytest.mark.parametrize("command", list(OUTPUTS))
async def test_a_full_stdout_is_one_line_and_status_1(
    live: Service, client: httpx.AsyncClient, command: str
) -> None:
    run_id = await finished_run(live, client)
    args = [a.format(server=base(live), run_id=run_id) for a in OUTPUTS[command]]
    result = await run_child(*args, redirect=">/dev/full")
    assert result.returncode == 1
    assert one_line(result) == (
        "research-service: could not write the output to stdout (No space left on device)"
    )


async def test_export_to_a_closed_or_full_stdout_is_one_line_and_status_1(
    make_service: MakeService, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    service = await make_service(store="sqlite")  # its run store is in tmp_path / "data"
    run_id = await finished_run(service, client)
    await service.server.close()
    args = ["export", run_id, "--data-dir", str(tmp_path / "data")]
    closed = await run_child(*args, redirect=">&-")
    assert closed.returncode == 1
    assert "stdout is closed" in one_line(closed)
    if is_dev_full():
        result = await run_child(*args, redirect=">/dev/full")
        assert result.returncode == 1
        assert one_line(result) == (
            "research-service: could not write the recording to stdout (No space left on device)"
        )
    written = await run_child(*args)  # and to a pipe, all of it
    assert (written.returncode, written.stderr) == (0, "")
    assert written.stdout.startswith('{"format":"research-service-recording"')


async def test_a_closed_stderr_never_sends_messages_to_stdout() -> None:
    result = await run_child(
        "ask", "--server", f"http://127.0.0.1:{refused_port()}", "--json", "Q?", redirect="2>&-"
    )
    assert result.returncode == 4
    assert result.stdout == ""


# --- 5. stdin closed ------------------------------------------------------------------------


async def test_ask_review_with_stdin_closed_says_how_to_decide_and_follows_on(
    live: Service, client: httpx.AsyncClient
) -> None:
    proc = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        'exec "$@" <&-',
        "sh",
        *COMMAND,
        *("ask", "--server", base(live), "--review", "-q", "Q?"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_process.child_env(),
    )
    assert proc.stderr is not None
    async with asyncio.timeout(cli_process.TIMEOUT_S):
        message = (await proc.stderr.readline()).decode()
    assert "no answer can be read here; decide from another shell" in message, message
    run_id = message.split("run ", 1)[1].split()[0]
    decided = await client.post(live.url(f"/v1/runs/{run_id}/plan"), json={})
    assert decided.status_code == 202, decided.text
    async with asyncio.timeout(cli_process.TIMEOUT_S):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    assert out.decode().startswith("".join(PIECES))


async def test_ask_dash_with_stdin_closed_is_a_usage_error() -> None:
    result = await run_child("ask", "-", redirect="<&-")
    assert result.returncode == 2
    assert one_line(result) == (
        "research-service: no question on stdin (it is closed); pass the question as arguments"
    )


# --- 6. the in-process service's flags with --server, whatever their value -----------------


@pytest.mark.parametrize("flag", ["--token-delay-ms", "--review-timeout-s", "--max-tokens-per-run"])
async def test_in_process_flags_set_to_0_are_refused_with_server(live: Service, flag: str) -> None:
    result = await cli_process.run("ask", "--server", base(live), flag, "0", "Q?")
    assert result.returncode == 2
    assert f"{flag} set up the in-process service; drop them with --server" in one_line(result)
    assert result.stdout == ""


# --- 7. export from a server that is not a research-service ---------------------------------


NOT_FOUND_PAGE = "<!DOCTYPE html>\n<html>\n<head><title>404 Not Found</title></head>\n<body>\n"


@pytest.fixture
async def foreign_server() -> AsyncIterator[str]:
    """A web server that is not a research-service: an HTML 404 page for every path."""

    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text=NOT_FOUND_PAGE * 20, content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_export_from_a_server_that_is_not_a_service_says_what_it_got_in_one_line(
    foreign_server: str,
) -> None:
    result = await cli_process.run("export", RUN_ID, "--server", foreign_server)
    assert result.returncode == 4
    line = one_line(result)
    assert f"{foreign_server}/v1/runs/{RUN_ID}/recording answered HTTP 404 <!DOCTYPE html>" in line
    assert "which is not a research-service's answer; check --server" in line
    assert result.stdout == ""


async def test_export_from_an_unreachable_server_exits_4() -> None:
    result = await cli_process.run(
        "export", RUN_ID, "--server", f"http://127.0.0.1:{refused_port()}"
    )
    assert result.returncode == 4
    assert "cannot download" in one_line(result)
