"""The terminal client against servers that are almost a research-service, or not at all:
a run without what a recording needs, https to a plain server, a password in --server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests import cli_process
from tests.loopback import refused_port
from tests.test_cli_hardening import KEPT, one_line

RUN_ID = "0123456789abcdef"


#: A run's body as `POST /v1/runs` answers it, lacking `options` and `created_at`.
BARE_RUN = {"id": RUN_ID, "question": "Q?", "events_url": f"/v1/runs/{RUN_ID}/events"}


@asynccontextmanager
async def creating(run: dict[str, Any]) -> AsyncIterator[str]:
    """A server whose `POST /v1/runs` answers `run`; its base URL."""

    async def create(request: web.Request) -> web.Response:
        return web.json_response(run, status=201)

    app = web.Application()
    app.router.add_post("/v1/runs", create)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def almost_a_service() -> AsyncIterator[str]:
    """Answers `POST /v1/runs` with a run lacking `options` and `created_at`."""
    async with creating(BARE_RUN) as url:
        yield url


async def test_a_run_without_what_a_recording_needs_exits_4_and_keeps_the_file(
    almost_a_service: str, tmp_path: Path
) -> None:
    path = tmp_path / "keep.jsonl"
    path.write_text(KEPT)
    result = await cli_process.run("ask", "--server", almost_a_service, "--record", str(path), "Q?")
    assert result.returncode == 4
    assert "cannot head a recording (field 'options' must be an object" in one_line(result)
    assert path.read_text() == KEPT


@pytest.mark.parametrize("created_at", ["bogus", "9999-12-31T23:59:59-14:00"])
async def test_a_run_whose_header_replay_would_refuse_leaves_the_file_alone(
    tmp_path: Path, created_at: str
) -> None:
    """Checked as `replay` reads a header: what is recorded can be replayed."""
    path = tmp_path / "keep.jsonl"
    path.write_text(KEPT)
    async with creating({**BARE_RUN, "options": {}, "created_at": created_at}) as url:
        result = await cli_process.run("ask", "--server", url, "--record", str(path), "Q?")
    assert result.returncode == 4
    assert "field 'created_at' is" in one_line(result)
    assert path.read_text() == KEPT


@pytest.mark.parametrize("command", ["ask", "listen"])
async def test_https_to_a_plain_server_says_tls_failed_not_a_system_error(
    almost_a_service: str, command: str
) -> None:
    server = almost_a_service.replace("http://", "https://")
    args = ["Q?"] if command == "ask" else [RUN_ID]
    result = await cli_process.run(command, "--server", server, *args)
    assert result.returncode == 4
    line = one_line(result)
    assert "TLS failed: wrong version number (does it speak https?)" in line
    assert "Operation not permitted" not in line


async def test_a_password_in_the_server_url_is_never_printed() -> None:
    server = f"http://alice:s3cret@127.0.0.1:{refused_port()}"
    result = await cli_process.run("ask", "--server", server, "Q?")
    assert result.returncode == 4
    line = one_line(result)
    assert (
        f"cannot reach the service at http://alice:***@127.0.0.1:{server.rsplit(':', 1)[1]} ("
        in line
    )
    assert "s3cret" not in result.stderr
