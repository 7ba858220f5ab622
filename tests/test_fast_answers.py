"""An answer that arrives all at once is written over many turns of the event loop, not one.

The real `openai` SDK reads a fake OpenAI-compatible server (tests/fake_openai) over a loopback
socket. The fake runs in the service's own event loop and writes its whole answer in one step,
so the service reads many chunks at a time, as it does from a fast model server, or from any
server whose chunks piled up while the loop was busy. Parsing them suspends nowhere: without a
turn given back, every other stream and request would wait for the whole answer.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import httpx

from research_service.app import create_app
from research_service.pipeline.synthesizer import PIECES_PER_TURN
from research_service.web.keys import MANAGER
from tests.conftest import ServiceTestServer
from tests.fake_openai import FakeOpenAI, Reply, wants_json
from tests.fakes import ScriptedSearch
from tests.openai_settings import PLANNER, WRITER, openai_settings
from tests.sse import listen

#: Enough for the fake to write well past a read's worth before the service reads.
WORDS = 1500


async def test_an_answer_read_all_at_once_is_written_a_few_pieces_per_loop_turn(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    pieces = [f" word{number}" for number in range(WORDS)]
    async with FakeOpenAI(models=(PLANNER, WRITER)) as fake:
        fake.script.add(Reply.json({"queries": ["alpha"]}, when=wants_json))
        fake.script.add(Reply(pieces=pieces))
        app = create_app(openai_settings(fake, tmp_path, store="memory"), search=ScriptedSearch())
        server = ServiceTestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            stats = app[MANAGER].stats
            # What the run had appended at each turn of the loop, until it ended.
            seen: list[int] = []
            ended = asyncio.Event()

            async def every_turn() -> None:
                while not ended.is_set():
                    seen.append(stats.events_appended)
                    await asyncio.sleep(0)

            probe = asyncio.create_task(every_turn())
            created = await client.post(
                f"http://127.0.0.1:{server.port}/v1/runs", json={"question": "What is up?"}
            )
            run_id = created.json()["id"]
            got = await listen(
                client, f"http://127.0.0.1:{server.port}/v1/runs/{run_id}/events", timeout=30
            )
            ended.set()
            await probe
        finally:
            await server.close()
    assert got.last[0] == "done"
    assert len([e for e in got.events if e.event == "token"]) == WORDS
    # Without the turns given back, one turn wrote 259 of them (one read's worth).
    steps = [after - before for before, after in itertools.pairwise(seen)]
    assert sum(steps) >= WORDS
    assert max(steps) <= PIECES_PER_TURN + 2  # a phase event may share a turn with them
