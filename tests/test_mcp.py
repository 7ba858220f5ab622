"""`research-service mcp` driven by the official SDK's own client, over stdio and Streamable HTTP.

The MCP server runs as a real child process, a client of a real service on loopback (scripted
model and search, so every answer is known).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp_types import INVALID_PARAMS, TextContent

from research_service.cli import build_parser
from research_service.cli.service_choice import IN_PROCESS_GROUP
from research_service.runs.sqlite_db import RUN_STORE_FILE
from tests import cli_process
from tests.conftest import MakeService, Service
from tests.drop_proxy import DropProxy
from tests.loopback import refused_port
from tests.served import CORPUS
from tests.test_client_auth import QUESTION, keyed_service
from tests.test_lifecycle import store_writes_held, stored_run_id, wait_until

TIMEOUT_S = 60.0
Progress = list[tuple[float, str | None]]


def stdio(*args: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "research_service", "mcp", *args],
        env=cli_process.child_env(),
    )


@asynccontextmanager
async def over_stdio(service: Service) -> AsyncIterator[Client]:
    async with Client(stdio("--server", service.url("/")), read_timeout_seconds=TIMEOUT_S) as c:
        yield c


#: What `mcp --http` says once it listens.
LISTENING = re.compile(rb"MCP over Streamable HTTP at (http://127\.0\.0\.[12]:[1-9]\d*/mcp)$")


class McpUrl(str):
    """The MCP endpoint's URL; `log` holds the server's stderr once it has stopped."""

    log: str = ""


@asynccontextmanager
async def http_server(*args: str, host: str = "127.0.0.1") -> AsyncIterator[McpUrl]:
    """`mcp --http` on a port the kernel picks, as a child process; yields the MCP URL it
    says once it listens."""
    cli = await cli_process.start("mcp", *args, "--http", f"{host}:0")
    url = McpUrl("")
    try:
        assert cli.proc.stderr is not None
        async with asyncio.timeout(TIMEOUT_S):
            while not (said := LISTENING.search(line := await cli.proc.stderr.readline())):
                assert line, "mcp --http exited before it listened"
        url = McpUrl(said[1].decode())
        yield url
    finally:
        cli.proc.terminate()
        url.log = (await cli.finish()).stderr


def text_of(result: Any) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def research(client: Client, **arguments: Any) -> tuple[Any, Progress]:
    progress: Progress = []

    async def heard(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    result = await client.call_tool("research", arguments, progress_callback=heard)
    return result, progress


async def test_the_tools_are_listed_with_input_and_output_schemas(service: Service) -> None:
    async with over_stdio(service) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(listed) == {"research", "start_research", "get_research", "cancel_research"}
    ask = listed["research"].input_schema
    assert ask["required"] == ["question"]
    assert set(ask["properties"]) == {"question", "breadth", "max_sources", "depth"}
    assert ask["properties"]["question"]["maxLength"] == 2000
    assert listed["get_research"].input_schema["properties"]["run_id"]["pattern"]
    for tool in listed.values():
        assert tool.output_schema is not None
        assert {"run_id", "status", "answer", "sources"} <= set(tool.output_schema["properties"])


async def test_research_reports_every_phase_in_order_and_returns_the_cited_answer(
    service: Service, client: httpx.AsyncClient
) -> None:
    async with over_stdio(service) as mcp:
        result, progress = await research(mcp, question="What is up?", breadth=2, max_sources=3)
    assert not result.is_error
    found = result.structured_content
    assert found["status"] == "completed"
    assert found["answer"] == "The answer [1]."
    snapshot = (await client.get(service.url(f"/v1/runs/{found['run_id']}"))).json()
    assert snapshot["answer"] == found["answer"]
    assert [s["url"] for s in found["sources"]] == [s["url"] for s in snapshot["sources"]]
    # One notification per phase event, the count only growing, each with a message.
    values = [value for value, _ in progress]
    assert values == sorted(set(values))
    assert len(values) == 8
    messages = [message for _, message in progress]
    assert messages[:2] == ["planning started", "planned: alpha, beta"]
    assert "searching 1/2: alpha" in messages or "searching 1/2: beta" in messages
    written = f"writing the answer from {len(found['sources'])} sources"
    assert messages[-2:] == [written, "synthesizing completed"]
    # The text block is the answer with its numbered sources, in Markdown.
    assert text_of(result).startswith("The answer [1].\n\nSources:\n\n1. [")


async def test_cancelling_the_call_cancels_the_run(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.hold_after = 1
    async with over_stdio(service) as mcp:
        call = asyncio.ensure_future(research(mcp, question="Hold on"))
        await service.until_held(timeout=TIMEOUT_S)
        (run_id,) = list(service.manager._live)  # the one run, held mid-answer
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await service.wait_done(run_id, timeout=TIMEOUT_S)
    snapshot = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    # Cancelled by the MCP server's cancel request, not abandoned for want of a listener.
    assert (snapshot["status"], snapshot["error"]["code"]) == ("cancelled", "cancelled")


@pytest.mark.parametrize("tool", ["research", "start_research"])
async def test_a_call_cancelled_while_its_run_is_being_made_cancels_the_run(
    make_service: MakeService, client: httpx.AsyncClient, tmp_path: Path, tool: str
) -> None:
    """The run was made after all, and went on unwanted: its slot, its owner's quota and
    its model tokens spent, and nobody told its id."""
    service = await make_service(store="sqlite")
    service.llm.hold_after = 1  # the run goes on until cancelled: nothing else ends it
    async with over_stdio(service) as mcp:
        with store_writes_held(tmp_path / "data" / RUN_STORE_FILE):  # the POST waits to store
            call = asyncio.ensure_future(mcp.call_tool(tool, {"question": "Made anyway?"}))
            await wait_until(lambda: service.manager.active_runs == 1, timeout=TIMEOUT_S)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
        run_id = await stored_run_id(service)
        await service.wait_done(run_id, timeout=TIMEOUT_S)
    snapshot = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    assert snapshot["status"] == "cancelled", snapshot
    assert snapshot["error"]["code"] == "cancelled"


async def test_start_then_get_polls_to_the_answer_and_resources_read_it(service: Service) -> None:
    service.llm.hold_after = 1
    async with over_stdio(service) as mcp:
        started = await mcp.call_tool("start_research", {"question": "What is up?"})
        run_id = started.structured_content["run_id"]
        assert started.structured_content["status"] == "queued"
        assert started.structured_content["resource"] == f"research://runs/{run_id}"
        assert started.structured_content["events_url"].startswith(
            service.url(f"/v1/runs/{run_id}/events")
        )
        assert "its answer is not written yet" in text_of(started)
        await service.until_held(timeout=TIMEOUT_S)
        going = (await mcp.call_tool("get_research", {"run_id": run_id})).structured_content
        assert (going["status"], going["phase"], going["answer"]) == (
            "running",
            "synthesizing",
            None,
        )
        service.llm.release.set()
        await service.wait_done(run_id, timeout=TIMEOUT_S)
        done = (await mcp.call_tool("get_research", {"run_id": run_id})).structured_content
        assert (done["status"], done["answer"]) == ("completed", "The answer [1].")

        snapshot = await mcp.read_resource(f"research://runs/{run_id}")
        assert json.loads(snapshot.contents[0].text)["answer"] == "The answer [1]."
        answer = await mcp.read_resource(f"research://runs/{run_id}/answer")
        assert answer.contents[0].text.startswith("The answer [1].\n\nSources:")
        assert answer.contents[0].mime_type == "text/markdown"


async def test_cancel_research_ends_a_run_still_going(service: Service) -> None:
    service.llm.hold_after = 1
    async with over_stdio(service) as mcp:
        started = await mcp.call_tool("start_research", {"question": "What is up?"})
        run_id = started.structured_content["run_id"]
        await service.until_held(timeout=TIMEOUT_S)
        await mcp.call_tool("cancel_research", {"run_id": run_id})
        await service.wait_done(run_id, timeout=TIMEOUT_S)
        ended = (await mcp.call_tool("get_research", {"run_id": run_id})).structured_content
    assert ended["status"] == "cancelled"
    assert ended["error"].startswith("cancelled: ")


async def test_bad_calls_are_mcp_errors_that_say_what_was_wrong(service: Service) -> None:
    async with over_stdio(service) as mcp:
        unknown = await mcp.call_tool("get_research", {"run_id": "0" * 16})
        assert unknown.is_error
        assert "no run with id '0000000000000000'" in text_of(unknown)
        malformed = await mcp.call_tool("get_research", {"run_id": "../../etc"})
        assert malformed.is_error
        assert "run_id" in text_of(malformed)
        empty = await mcp.call_tool("research", {"question": ""})
        assert empty.is_error
        too_wide = await mcp.call_tool("start_research", {"question": "q", "breadth": 99})
        assert too_wide.is_error
        # What the service's API refuses, the tools refuse too: no "3" for 3, no true for 1.
        for loose in ("3", True, 3.5):
            refused = await mcp.call_tool("start_research", {"question": "q", "breadth": loose})
            assert refused.is_error, loose
            assert "breadth" in text_of(refused)
        # A resource says what was wrong as well.
        with pytest.raises(MCPError) as missing:
            await mcp.read_resource(f"research://runs/{'0' * 16}/answer")
        assert "no run with id '0000000000000000'" in missing.value.message
        assert missing.value.code == INVALID_PARAMS
        # A resource's run id never reaches the service as a path of its own.
        for odd in (f"{'0' * 16}%2Fevents", f"{'0' * 16}%2Frecording", "%3Flimit%3D1", "ABC"):
            with pytest.raises(MCPError) as refused:
                await mcp.read_resource(f"research://runs/{odd}")
            assert "a run id is 16 lowercase hex characters" in refused.value.message, odd
            assert refused.value.code == INVALID_PARAMS
        # The server is still there for the next call.
        assert len((await mcp.list_tools()).tools) == 4


async def test_an_unreachable_service_is_an_error_not_a_crash() -> None:
    port = refused_port()
    params = stdio("--server", f"http://127.0.0.1:{port}")
    async with Client(params, read_timeout_seconds=TIMEOUT_S) as mcp:
        result = await mcp.call_tool("start_research", {"question": "anyone there?"})
        assert result.is_error
        assert f"127.0.0.1:{port}" in text_of(result)
        assert len((await mcp.list_tools()).tools) == 4


async def test_the_deep_research_prompt_asks_for_the_tool_and_citations(service: Service) -> None:
    async with over_stdio(service) as mcp:
        prompts = {p.name for p in (await mcp.list_prompts()).prompts}
        assert "deep_research" in prompts
        got = await mcp.get_prompt("deep_research", {"question": "How do I parse JSON?"})
    text = got.messages[0].content.text  # type: ignore[union-attr]
    assert "How do I parse JSON?" in text
    assert "`research` tool" in text
    assert "[n]" in text


async def test_a_prompt_asked_for_wrongly_is_invalid_params_naming_what(service: Service) -> None:
    async with (
        http_server("--server", service.url("/")) as url,
        Client(url, read_timeout_seconds=TIMEOUT_S) as mcp,
    ):
        with pytest.raises(MCPError) as missing:
            await mcp.get_prompt("deep_research", {})
        assert missing.value.code == INVALID_PARAMS
        assert missing.value.message == "prompt 'deep_research' needs its argument(s): question"
        with pytest.raises(MCPError) as unknown:
            await mcp.get_prompt("zz", {"question": "q"})
        assert unknown.value.code == INVALID_PARAMS
        assert unknown.value.message == "no prompt named 'zz'; the prompts: deep_research"
        got = await mcp.get_prompt("deep_research", {"question": "Still there?"})
        assert "Still there?" in got.messages[0].content.text  # type: ignore[union-attr]
    # A client's mistake, not the server's: no error and no traceback in its log.
    assert "Traceback" not in url.log
    assert " ERROR " not in url.log


async def test_research_over_streamable_http_with_progress(
    service: Service, client: httpx.AsyncClient
) -> None:
    async with (
        http_server("--server", service.url("/")) as url,
        Client(url, read_timeout_seconds=TIMEOUT_S) as mcp,
    ):
        result, progress = await research(mcp, question="What is up?", breadth=2)
    assert result.structured_content["answer"] == "The answer [1]."
    assert [value for value, _ in progress] == [float(n) for n in range(1, 9)]


async def test_mcp_refuses_a_bad_command_line() -> None:
    bad = await cli_process.run("mcp", "--http", "nowhere")
    assert bad.returncode == 2
    assert "is not HOST:PORT" in bad.stderr
    exposed = await cli_process.run("mcp", "--http", "0.0.0.0:8090")
    assert exposed.returncode == 2
    assert "loopback only" in exposed.stderr
    keyless = await cli_process.run("mcp", "--api-key", "k")
    assert keyless.returncode == 2
    assert "--api-key is for a --server" in keyless.stderr


async def test_mcp_http_on_a_taken_port_says_so_before_it_starts_anything() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = await cli_process.run("mcp", "--http", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr == (
        f"research-service: port {port} on 127.0.0.1 is already in use by another process; "
        "stop it or choose another --http port (:0 picks a free one)\n"
    )
    assert result.stdout == ""


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "curl", "version": "1"},
    },
}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
async def test_the_http_endpoint_refuses_other_hosts_and_cross_site_pages(
    service: Service, client: httpx.AsyncClient, host: str
) -> None:
    """DNS rebinding (a foreign Host) and a page of another site (Origin) get nothing, on
    every loopback address (the SDK guarded 127.0.0.1, localhost and ::1 only)."""
    headers = {"Accept": "application/json, text/event-stream"}
    async with http_server("--server", service.url("/"), host=host) as url:
        rebound = await client.post(
            url, json=INITIALIZE, headers={**headers, "Host": "evil.example"}
        )
        assert rebound.status_code == 421
        cross = await client.post(
            url, json=INITIALIZE, headers={**headers, "Origin": "https://evil.example"}
        )
        assert cross.status_code == 403
        # The same request, from a local client, is answered.
        local = await client.post(url, json=INITIALIZE, headers=headers)
        assert local.status_code == 200


@asynccontextmanager
async def keyed_client(url: str, key: str | None) -> AsyncIterator[Client]:
    """An SDK client over Streamable HTTP that sends `key` as its bearer token."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=TIMEOUT_S) as http,
        Client(streamable_http_client(url, http_client=http), read_timeout_seconds=TIMEOUT_S) as c,
    ):
        yield c


async def test_over_http_each_callers_key_goes_to_the_service_and_its_rules_apply(
    tmp_path: Path,
) -> None:
    """No --api-key: a caller's bearer key is the one the service checks; runs stay theirs."""
    async with (
        keyed_service(tmp_path, "--token-delay-ms", "0") as keyed,
        http_server("--server", keyed.base) as url,
    ):
        async with keyed_client(url, keyed.keys["alice"]) as alice:
            started = await alice.call_tool("start_research", {"question": QUESTION})
            assert not started.is_error, text_of(started)
            run_id = started.structured_content["run_id"]
            own = await alice.call_tool("get_research", {"run_id": run_id})
            assert not own.is_error
            # The resource list is the caller's too: her run, and its question.
            listed = [str(r.uri) for r in (await alice.list_resources()).resources]
            assert f"research://runs/{run_id}" in listed
        async with keyed_client(url, keyed.keys["bob"]) as bob:
            other = await bob.call_tool("get_research", {"run_id": run_id})
            assert other.is_error
            assert f"no run with id '{run_id}'" in text_of(other)
            theirs = (await bob.list_resources()).resources
            assert not [r for r in theirs if run_id in str(r.uri)]
            assert not [r for r in theirs if QUESTION in (r.description or "")]
        async with keyed_client(url, None) as nobody:
            refused = await nobody.call_tool("start_research", {"question": QUESTION})
            assert refused.is_error
            assert "API key" in text_of(refused)
        async with keyed_client(url, "rsk_wrong") as wrong:
            refused = await wrong.call_tool("get_research", {"run_id": run_id})
            assert refused.is_error
            assert "rsk_wrong" not in text_of(refused)  # a key is never echoed


async def test_a_client_cut_off_mid_run_resumes_and_misses_no_notification(
    service: Service,
) -> None:
    """The connection drops mid-answer; the run ends meanwhile; the client resumes with
    Last-Event-ID and gets the notification it missed (rebuilt from the run's events) and
    the result, each once, in order."""
    service.llm.hold_after = 1
    progress: Progress = []
    seven = asyncio.Event()

    async def heard(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))
        if len(progress) == 7:  # synthesizing started: the run holds after its first token
            seven.set()

    async with http_server("--server", service.url("/")) as url:
        port = int(url.split(":")[2].split("/")[0])
        proxy = DropProxy("127.0.0.1", port)
        await proxy.start()
        try:
            # The 2025-11-25 wire (sessions, resumable streams); on 2026-07-28 closing a
            # response stream is how a client cancels, so there is nothing to resume.
            legacy = Client(proxy.url("/mcp"), read_timeout_seconds=TIMEOUT_S, mode="legacy")
            async with legacy as mcp:
                arguments = {"question": "What is up?", "breadth": 2}
                call = asyncio.ensure_future(
                    mcp.call_tool("research", arguments, progress_callback=heard)
                )
                async with asyncio.timeout(TIMEOUT_S):
                    await seven.wait()
                (run_id,) = list(service.manager._live)
                cut = await proxy.drop_all()
                assert cut >= 1
                accepted = proxy.accepted
                service.llm.release.set()
                await service.wait_done(run_id, timeout=TIMEOUT_S)
                # The run ended while the client was away (it waits `retry:` to resume).
                assert proxy.accepted == accepted
                result = await asyncio.wait_for(call, TIMEOUT_S)
                assert proxy.accepted > accepted  # it came back through the proxy
        finally:
            await proxy.close()
    assert result.structured_content["answer"] == "The answer [1]."
    assert [value for value, _ in progress] == [float(n) for n in range(1, 9)]
    assert progress[-1][1] == "synthesizing completed"
    # What it missed was sent on resuming: the last notification rebuilt from the run's
    # events, the result from the stream.
    rebuilt = f"after step 7: 1 notifications rebuilt from run {run_id}, and its result"
    assert rebuilt in url.log


async def test_without_server_it_researches_on_an_in_process_service(tmp_path: Path) -> None:
    """As `ask` does: the embedded defaults (builtin model, here a small corpus), no service."""
    params = stdio("--data-dir", str(tmp_path / "data"), "--corpus", str(CORPUS))
    async with Client(params, read_timeout_seconds=TIMEOUT_S) as mcp:
        result, progress = await research(mcp, question=QUESTION)
        listed = {str(r.uri) for r in (await mcp.list_resources()).resources}
    assert not result.is_error, text_of(result)
    assert "1991" in result.structured_content["answer"]
    assert result.structured_content["sources"]
    assert progress[0][1] == "planning started"
    run_id = result.structured_content["run_id"]
    # The newest runs are listed as resources, snapshot and answer.
    assert {f"research://runs/{run_id}", f"research://runs/{run_id}/answer"} <= listed


def test_the_flag_table_in_docs_mcp_md_is_the_commands_flags() -> None:
    (mcp_parser,) = (
        action.choices["mcp"]
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    own = {
        option
        for action in mcp_parser._actions
        for option in action.option_strings
        if option.startswith("--") and action.container.title != IN_PROCESS_GROUP
    } - {"--help"}
    doc = (Path(__file__).parent.parent / "docs" / "mcp.md").read_text(encoding="utf-8")
    table = set(re.findall(r"^\| `(--[a-z-]+)", doc, flags=re.MULTILINE))
    assert table == own
    # The in-process service's flags are named in the prose, every one.
    in_process = {
        option
        for action in mcp_parser._actions
        for option in action.option_strings
        if action.container.title == IN_PROCESS_GROUP
    }
    assert all(f"`{option}`" in doc for option in in_process), in_process


async def test_the_http_endpoint_refuses_malformed_and_oversized_bodies_and_goes_on(
    service: Service, client: httpx.AsyncClient
) -> None:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with http_server("--server", service.url("/")) as url:
        garbage = await client.post(url, content=b"{not json", headers=headers)
        assert 400 <= garbage.status_code < 500
        huge = await client.post(url, content=b"[" + b"1," * 8_000_000 + b"1]", headers=headers)
        assert huge.status_code == 413
        # Everyone else is still served.
        async with Client(url, read_timeout_seconds=TIMEOUT_S) as mcp:
            assert len((await mcp.list_tools()).tools) == 4
