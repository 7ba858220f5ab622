"""The recordings shipped in tests/recordings/ replay through the HTTP API, and their cassettes
run the pipeline to the same answer. Regenerate them with `python -m tests.recordings.regenerate`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from research_service.app import create_app
from research_service.providers.cassettes import CASSETTE_FILE
from research_service.recording import Recording, load_recording
from research_service.replay_app import INSTANT, replay_app
from research_service.settings import Settings
from tests.recordings.regenerate import CASES, Case, create, review
from tests.sse import Received, listen

HERE = Path(__file__).parent / "recordings"


def _params(cases: list[Case]) -> list[Any]:
    return [pytest.param(case, id=case.name) for case in cases]


ALL = _params(list(CASES))
COMPLETED = _params([case for case in CASES if case.status == "completed"])


def _path(case: Case) -> Path:
    return HERE / f"{case.name}.jsonl"


def _expected(recording: Recording) -> list[tuple[str, str, dict[str, Any]]]:
    return [(f"{recording.run_id}:{e.seq}", e.event, e.data) for e in recording.events]


def _got(received: Received) -> list[tuple[str, str, dict[str, Any]]]:
    return [(e.id, e.event, received.data(i)) for i, e in enumerate(received.events)]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10.0) as client:
        yield client


@pytest.fixture
async def replaying(tmp_path: Path, case: Case) -> AsyncIterator[tuple[Recording, TestServer]]:
    recording = load_recording(_path(case))
    app = replay_app(Settings(data_dir=tmp_path / "replay"), [recording], speed=INSTANT)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield recording, server
    await server.close()


def test_every_case_is_shipped_with_its_cassettes() -> None:
    shipped = {path.stem for path in HERE.glob("*.jsonl")}
    assert shipped == {case.name for case in CASES}
    for case in CASES:
        assert (HERE / case.name / CASSETTE_FILE).is_file(), case.name


@pytest.mark.parametrize("case", ALL)
def test_the_recording_loads_and_ends_as_recorded(case: Case) -> None:
    recording = load_recording(_path(case))
    assert recording.question == case.question
    last = recording.events[-1]
    assert last.event == "done"
    assert last.data["status"] == case.status
    if case.status == "cancelled":
        assert "token" in [e.event for e in recording.events]
    options = recording.options.to_dict()
    assert {key: options.get(key) for key in case.options} == case.options


def test_the_reviewed_recording_holds_each_decision_in_its_place() -> None:
    """Feedback in round 1, an edit in round 2, then the edited queries are searched."""
    (case,) = [case for case in CASES if case.decisions]
    lines = [json.loads(line) for line in _path(case).read_text(encoding="utf-8").splitlines()]
    assert lines[0]["options"]["review_plan"] is True
    planning = [
        e["data"] for e in lines[1:] if e["event"] == "phase" and e["data"]["phase"] == "planning"
    ]
    assert [(d["status"], d.get("round"), d.get("decision")) for d in planning] == [
        ("started", None, None),
        ("review", 1, None),
        ("reviewed", 1, "feedback"),
        ("review", 2, None),
        ("reviewed", 2, "edited"),
        ("completed", None, None),
    ]
    feedback, edit = case.decisions
    assert planning[2]["feedback"] == feedback["feedback"]
    assert planning[4]["queries"] == planning[5]["queries"] == edit["queries"]
    assert planning[5]["review"] == "edited"


@pytest.mark.parametrize("case", ALL)
async def test_replayed_stream_equals_the_recording(
    replaying: tuple[Recording, TestServer], http: httpx.AsyncClient
) -> None:
    recording, server = replaying
    url = str(server.make_url(f"/v1/runs/{recording.run_id}/events"))
    received = await listen(http, url)
    assert received.status == 200
    assert received.ended
    assert _got(received) == _expected(recording)


@pytest.mark.parametrize("case", ALL)
async def test_resuming_from_the_middle_gives_exactly_the_rest(
    replaying: tuple[Recording, TestServer], http: httpx.AsyncClient
) -> None:
    recording, server = replaying
    expected = _expected(recording)
    middle = len(expected) // 2
    url = str(server.make_url(f"/v1/runs/{recording.run_id}/events"))
    received = await listen(http, url, last_event_id=expected[middle - 1][0])
    assert received.status == 200
    assert received.ended
    assert _got(received) == expected[middle:]


@pytest.mark.parametrize("case", COMPLETED)
async def test_the_cassettes_run_the_pipeline_to_the_same_answer(
    case: Case, tmp_path: Path, http: httpx.AsyncClient
) -> None:
    recorded = load_recording(_path(case)).events[-1].data
    settings = Settings(
        data_dir=tmp_path / "data",
        llm="replay",
        search="replay",
        cassettes=HERE / case.name,
        token_delay_ms=0,
    )
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        run_id = await create(http, server, case)
        await review(http, server, run_id, case.decisions)
        received = await listen(http, str(server.make_url(f"/v1/runs/{run_id}/events")))
    finally:
        await server.close()
    name, done = received.last
    assert name == "done", received.names
    assert done["status"] == "completed", done
    assert done["answer"] == recorded["answer"]
    assert received.text() == recorded["answer"]
    assert [s["url"] for s in done["sources"]] == [s["url"] for s in recorded["sources"]]
