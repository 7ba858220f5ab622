"""The service behind a real nginx configured from deploy/nginx/: streams, resumes, headers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests import cli_process, nginx
from tests.conftest import MakeService, Service
from tests.sse import after_event, listen

MOUNTS = pytest.mark.parametrize("prefixed", [True, False], ids=["under-research", "at-root"])
#: The model holds after this many answer pieces until the test releases it.
HELD_AFTER = 1
#: A read timeout short enough to wait out in a test (the example's is 1 h).
SHORT_READ_TIMEOUT_S = 1.0


def upstream_port(server: TestServer) -> int:
    assert server.port is not None
    return server.port


@pytest.fixture
async def proxied(service: Service, tmp_path: Path) -> AsyncIterator[nginx.Nginx]:
    """The example's nginx in front of the test's service."""
    async with nginx.running(tmp_path / "nginx", upstream_port=upstream_port(service.server)) as n:
        yield n


async def start_held_run(
    proxy: nginx.Nginx, service: Service, client: httpx.AsyncClient, *, prefixed: bool = True
) -> str:
    """Create a run through the proxy whose model holds mid-answer; return its id."""
    service.llm.hold_after = HELD_AFTER
    url = proxy.url("v1/runs", prefixed=prefixed)
    created = await client.post(url, json={"question": "What is up?"})
    assert created.status_code == 201, created.text
    run_id: str = created.json()["id"]
    await service.until_held()
    return run_id


@MOUNTS
async def test_events_pass_the_proxy_one_by_one_uncompressed(
    proxied: nginx.Nginx, service: Service, client: httpx.AsyncClient, prefixed: bool
) -> None:
    """What the service wrote before the model's hold arrives while the model still holds.

    A proxy that buffers (nginx's default HTTP/1.0 to the service with buffering on, or gzip on
    text/event-stream) keeps it back until the stream ends, and this times out.
    """
    run_id = await start_held_run(proxied, service, client, prefixed=prefixed)

    url = proxied.url(f"v1/runs/{run_id}/events", prefixed=prefixed)
    got = await listen(client, url, stop=after_event("token"), timeout=5)

    assert got.status == 200
    assert got.headers["Content-Type"].startswith("text/event-stream")
    assert "Content-Encoding" not in got.headers, "a compressed stream holds events back"
    assert got.names[0] == "phase"
    assert got.text() == service.llm.pieces[0]
    assert not service.llm.release.is_set(), "the model still holds: the run is not over"
    service.llm.release.set()


async def test_a_stream_resumes_after_last_event_id_through_the_proxy(
    proxied: nginx.Nginx, service: Service, client: httpx.AsyncClient
) -> None:
    run_id = await start_held_run(proxied, service, client)
    url = proxied.url(f"v1/runs/{run_id}/events")
    first = await listen(client, url, stop=after_event("token"), timeout=5)
    service.llm.release.set()

    resumed = await listen(client, url, last_event_id=first.ids[-1], timeout=10)

    assert resumed.ended
    assert resumed.last[0] == "done"
    whole = await listen(client, service.url(f"/v1/runs/{run_id}/events"), timeout=10)
    assert first.ids + resumed.ids == whole.ids, "no event lost or repeated across the resume"
    assert first.text() + resumed.text() == resumed.last[1]["answer"]


async def test_heartbeats_keep_a_quiet_stream_open_past_the_proxy_read_timeout(
    make_service: MakeService, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Pings more often than nginx's read timeout: the held stream outlives it twice over."""
    service = await make_service(heartbeat_s=SHORT_READ_TIMEOUT_S / 5)
    port = upstream_port(service.server)
    async with nginx.running(tmp_path / "nginx", upstream_port=port, read_timeout="1s") as proxy:
        run_id = await start_held_run(proxy, service, client)
        url = proxy.url(f"v1/runs/{run_id}/events")
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(20), client.stream("GET", url) as response:
            lines = response.aiter_lines()
            started = loop.time()
            async for line in lines:
                if line == ": ping" and loop.time() - started > 2 * SHORT_READ_TIMEOUT_S:
                    break
            service.llm.release.set()
            rest = [line async for line in lines]
    assert "event: done" in rest, "the stream was cut before the run ended"


async def read_event_names(client: httpx.AsyncClient, url: str, *, into: list[str]) -> None:
    """Read a stream until it ends, collecting its event names as they come."""
    async with asyncio.timeout(10), client.stream("GET", url) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                into.append(line.removeprefix("event: "))


async def test_a_quiet_stream_without_heartbeats_is_cut_by_the_read_timeout(
    service: Service, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Why the heartbeat (15 s) must be shorter than every proxy's read timeout."""
    port = upstream_port(service.server)
    async with nginx.running(tmp_path / "nginx", upstream_port=port, read_timeout="1s") as proxy:
        run_id = await start_held_run(proxy, service, client)
        names: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):  # nginx aborts the chunked body
            await read_event_names(client, proxy.url(f"v1/runs/{run_id}/events"), into=names)
        service.llm.release.set()
    assert "token" in names
    assert "done" not in names
    assert b"upstream timed out" in proxy.log


async def test_created_runs_are_located_under_the_prefix(
    proxied: nginx.Nginx, service: Service, client: httpx.AsyncClient
) -> None:
    created = await client.post(proxied.url("v1/runs"), json={"question": "Where?"})
    assert created.status_code == 201
    assert created.headers["Location"] == f"/research/v1/runs/{created.json()['id']}"
    await service.wait_done(created.json()["id"])


async def test_the_terminal_client_asks_under_the_prefix(
    proxied: nginx.Nginx, service: Service
) -> None:
    """`--server https://host/research` works: the client joins the API's paths to it."""
    server = proxied.url("").rstrip("/")
    result = await cli_process.run("ask", "--server", server, "--json", "Through nginx?")
    assert result.returncode == 0, result.stderr
    last = result.json_lines()[-1]
    assert last["event"] == "done"
    assert last["data"]["status"] == "completed"
    assert last["data"]["answer"] == "".join(service.llm.pieces)


async def test_the_prefix_without_its_slash_redirects_keeping_the_run(
    proxied: nginx.Nginx, client: httpx.AsyncClient
) -> None:
    """The panel's relative links need the slash; a share link's `?run=` survives."""
    bare = f"http://127.0.0.1:{proxied.prefix_port}/research"
    moved = await client.get(f"{bare}?run=0123456789abcdef")
    assert moved.status_code == 301
    assert moved.headers["Location"] == "/research/?run=0123456789abcdef"
    assert moved.headers["Server"] == "nginx", "no version in Server"
    assert (await client.get(bare)).headers["Location"] == "/research/"


async def test_panel_files_are_compressed_and_revalidated_through_the_proxy(
    proxied: nginx.Nginx, service: Service, client: httpx.AsyncClient
) -> None:
    page = await client.get(proxied.url(""))
    assert page.status_code == 200
    assert '<script type="module" src="static/panel.js">' in page.text
    script = await client.get(proxied.url("static/panel.js"), headers={"Accept-Encoding": "gzip"})
    assert script.headers["Content-Encoding"] == "gzip"
    assert script.content == (await client.get(service.url("/static/panel.js"))).content
    again = await client.get(
        proxied.url("static/panel.js"), headers={"If-None-Match": script.headers["ETag"]}
    )
    assert again.status_code == 304


async def test_an_oversized_body_gets_the_services_own_413(
    proxied: nginx.Nginx, client: httpx.AsyncClient
) -> None:
    """nginx's body limit sits above the API's 64 KiB, so the answer is problem+json."""
    body = json.dumps({"question": "x" * 70_000})
    response = await client.post(
        proxied.url("v1/runs"), content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["type"].endswith("/body-too-large")


async def _echo(request: web.Request) -> web.Response:
    """What the upstream received: the request line, its headers, and which connection."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    seen: dict[str, Any] = {
        "path_qs": request.path_qs,
        "version": f"{request.version.major}.{request.version.minor}",
        "headers": dict(request.headers),
        "peer_port": peer[1] if peer else None,
    }
    return web.json_response(seen)


@pytest.fixture
async def echo_server() -> AsyncIterator[TestServer]:
    """An upstream that answers every request with what it received."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server
    await server.close()


async def test_the_service_receives_the_request_as_sent_with_forwarding_headers(
    echo_server: TestServer, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    port = upstream_port(echo_server)
    async with nginx.running(tmp_path / "nginx", upstream_port=port) as proxy:
        url = proxy.url("v1/runs/0123456789abcdef/events?last_event_id=a%3A1")
        headers = {"Last-Event-ID": "0123456789abcdef:7", "Accept": "text/event-stream"}
        first = (await client.get(url, headers=headers)).json()
        second = (await client.get(url, headers=headers)).json()

    assert first["path_qs"] == "/v1/runs/0123456789abcdef/events?last_event_id=a%3A1"
    assert first["version"] == "1.1"
    received = first["headers"]
    assert received["Last-Event-ID"] == "0123456789abcdef:7"
    assert received["Accept"] == "text/event-stream"
    assert received["X-Forwarded-For"] == "127.0.0.1"
    assert received["X-Forwarded-Proto"] == "http"
    assert received["X-Forwarded-Prefix"] == "/research"
    assert received["Host"] == "127.0.0.1"
    assert received["X-Forwarded-Host"] == f"127.0.0.1:{proxy.prefix_port}"
    assert "Connection" not in received, "Connection: close would end every keep-alive"
    assert first["peer_port"] == second["peer_port"], "nginx reuses its connection to the service"
