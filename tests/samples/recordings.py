"""docs/recordings.md's samples: what a replay server answers to what it cannot do."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from aiohttp.test_utils import TestServer

from research_service.replay_app import INSTANT, load_recordings, replay_app
from research_service.settings import Settings
from tests.samples.api import http
from tests.samples.service import Env, Service

DOC: Final = "docs/recordings.md"
SHIPPED: Final = Path(__file__).resolve().parent.parent / "recordings" / "builtin_completed.jsonl"
#: Slow enough that the recording is still playing when the samples are taken.
CRAWL: Final = 0.001


@asynccontextmanager
async def replaying(env: Env, speed: float) -> AsyncIterator[Service]:
    """`research-service replay` of the shipped completed run, on a free loopback port."""
    server = TestServer(replay_app(Settings(), load_recordings([SHIPPED]), speed=speed))
    await server.start_server()
    try:
        yield Service(server, env.http)
    finally:
        await server.close()


async def capture(env: Env) -> dict[str, str]:
    """The 409s of a replay server: starting or cancelling a run, a recording not yet played."""
    run_id = load_recordings([SHIPPED])[0].run_id
    async with replaying(env, INSTANT) as service:
        create = await service.request("POST", "/v1/runs", json={"question": "Why?"})
        research = await service.request("GET", "/v1/research?q=Why%3F")
        cancel = await service.request("POST", f"/v1/runs/{run_id}/cancel")
    async with replaying(env, CRAWL) as service:
        unfinished = await service.request("GET", f"/v1/runs/{run_id}/recording")
    return {
        "recordings/replay-create": http(create, "Content-Type"),
        "recordings/replay-research": http(research, "Content-Type"),
        "recordings/replay-cancel": http(cancel, "Content-Type"),
        "recordings/replay-unfinished": http(unfinished, "Content-Type"),
    }
