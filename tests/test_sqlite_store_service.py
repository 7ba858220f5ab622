"""`--store sqlite`: finished runs survive a restart; interrupted runs end as failed."""

from __future__ import annotations

from pathlib import Path

import httpx
from aiohttp.test_utils import TestServer

from research_service.app import RUN_STORE_FILE, create_app
from research_service.events import Event
from research_service.runs import sqlite_log
from research_service.runs.models import RunRecord
from research_service.settings import Settings
from tests.fakes import ScriptedLLM, ScriptedSearch
from tests.sse import listen


async def start(tmp_path: Path) -> TestServer:
    settings = Settings(data_dir=tmp_path, store="sqlite")
    server = TestServer(
        create_app(settings, llm=ScriptedLLM(), search=ScriptedSearch()), host="127.0.0.1"
    )
    await server.start_server()
    return server


async def test_finished_runs_survive_a_restart(tmp_path: Path) -> None:
    server = await start(tmp_path)
    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(str(server.make_url("/v1/runs")), json={"question": "q?"})
        run_id = created.json()["id"]
        before = await listen(client, str(server.make_url(f"/v1/runs/{run_id}/events")))
        await server.close()

        server = await start(tmp_path)
        try:
            listing = (await client.get(str(server.make_url("/v1/runs")))).json()
            after = await listen(client, str(server.make_url(f"/v1/runs/{run_id}/events")))
            snapshot = (await client.get(str(server.make_url(f"/v1/runs/{run_id}")))).json()
        finally:
            await server.close()
    assert [r["id"] for r in listing["runs"]] == [run_id]
    assert after.ids == before.ids
    assert [e.data for e in after.events] == [e.data for e in before.events]
    assert snapshot["status"] == "completed"
    assert snapshot["answer"] == before.last[1]["answer"]


async def test_a_run_interrupted_by_a_stop_ends_failed_on_the_next_start(tmp_path: Path) -> None:
    # A process that stopped mid-run left a run with events but no `done`.
    store = await sqlite_log.open(tmp_path / RUN_STORE_FILE)
    record = RunRecord("0123456789abcdef", "left open?")
    await store.create_run(record)
    started = {"phase": "planning", "status": "started", "elapsed_ms": 0}
    await store.append(Event.create(record.id, 1, "phase", started, t_ms=0))
    await store.close()

    server = await start(tmp_path)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            got = await listen(client, str(server.make_url(f"/v1/runs/{record.id}/events")))
    finally:
        await server.close()
    assert got.names == ["phase", "error", "done"]
    assert got.data(1)["code"] == "interrupted"
    _, done = got.last
    assert done["status"] == "failed"
    assert done["error"]["code"] == "interrupted"
