"""`research-service replay`: recordings served through the same HTTP API and stream contract."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from research_service import __version__
from research_service.cli import main
from research_service.defaults import DEFAULT_RETRY_MS
from research_service.errors import LLMError, SearchError
from research_service.events import Event, encode, retry_field
from research_service.providers.base import AnswerRequest, PlanRequest
from research_service.recordings.stand_ins import NoModel, NoSearch
from research_service.replay_app import INSTANT, ReplayPlayer, load_recordings, replay_app
from research_service.settings import Settings
from research_service.web.keys import LLM, MANAGER, SEARCH
from tests.conftest import Service
from tests.fakes import RecordingReporter
from tests.sse import after_event, listen

RECORDINGS = Path(__file__).parent / "recordings"

READY = re.compile(rb"Running on (http://[^ ]+)")
# Raw U+2028, a quote, a backslash and a non-BMP character: the wire bytes must survive them.
PIECES = ["The ", "naïve\u2028", '"quoted" ', "back\\slash ", "emoji \U0001f600 ", "end [1]."]


@dataclass
class Recorded:
    """A run of the real service and the recording written from it."""

    path: Path
    run_id: str
    question: str
    wire: list[bytes]  # the original service's encoded events, in order
    snapshot: dict[str, Any]  # the original service's snapshot after `done`


def write_recording(
    path: Path, snapshot: dict[str, Any], events: list[Event], *, t_ms: list[int] | None = None
) -> None:
    """Write the documented format by hand: a header line, then one line per event."""
    header = {
        "format": "research-service-recording",
        "version": 1,
        "run_id": snapshot["id"],
        "question": snapshot["question"],
        "options": snapshot["options"],
        "created_at": snapshot["created_at"],
        "service_version": __version__,
    }
    lines = [json.dumps(header, ensure_ascii=False)]
    for index, event in enumerate(events):
        at = event.t_ms if t_ms is None else t_ms[index]
        line = {"seq": event.seq, "event": event.name, "data": event.data, "t_ms": at}
        lines.append(json.dumps(line, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


async def record(
    service: Service,
    client: httpx.AsyncClient,
    path: Path,
    *,
    question: str = "What is up?",
    retime: Callable[[list[Event]], list[int]] | None = None,
) -> Recorded:
    """Run `question` on the real service to its `done` and record it at `path`."""
    run_id = await service.create(client, question, breadth=2)
    await service.wait_done(run_id)
    events = await service.manager.log.read(run_id, after=0)
    snapshot = (await client.get(service.url(f"/v1/runs/{run_id}"))).json()
    write_recording(path, snapshot, events, t_ms=None if retime is None else retime(events))
    return Recorded(path, run_id, question, [event.wire for event in events], snapshot)


@pytest.fixture
async def recorded(service: Service, client: httpx.AsyncClient, tmp_path: Path) -> Recorded:
    service.llm.pieces = PIECES
    return await record(service, client, tmp_path / "run.jsonl")


MakeReplay = Callable[..., Awaitable[TestServer]]


@pytest.fixture
async def make_replay(tmp_path: Path) -> AsyncIterator[MakeReplay]:
    servers: list[TestServer] = []

    async def make(*paths: Path, speed: float = INSTANT) -> TestServer:
        settings = Settings(data_dir=tmp_path / "replay-data")
        server = TestServer(replay_app(settings, load_recordings(paths), speed=speed))
        await server.start_server()
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.close()


async def raw_stream(
    client: httpx.AsyncClient, url: str, *, last_event_id: str | None = None
) -> tuple[int, bytes]:
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with client.stream("GET", url, headers=headers) as response:
        return response.status_code, await response.aread()


def recording_wire(path: Path) -> list[bytes]:
    """Each event of a recording file encoded by the wire contract, independently of replay."""
    lines = path.read_text(encoding="utf-8").split("\n")
    run_id = json.loads(lines[0])["run_id"]
    events = [json.loads(line) for line in lines[1:] if line]
    return [encode(run_id, e["seq"], e["event"], e["data"]) for e in events]


# --- the stream contract ---------------------------------------------------------------------


async def test_instant_replay_streams_the_recorded_events_byte_for_byte(
    recorded: Recorded, make_replay: MakeReplay, client: httpx.AsyncClient
) -> None:
    server = await make_replay(recorded.path)
    status, body = await raw_stream(
        client, str(server.make_url(f"/v1/runs/{recorded.run_id}/events"))
    )
    assert status == 200
    assert body == retry_field(DEFAULT_RETRY_MS) + b"".join(recording_wire(recorded.path))
    # ... and the same bytes the original service sent: ids, names and data.
    assert body == retry_field(DEFAULT_RETRY_MS) + b"".join(recorded.wire)


async def test_resume_from_the_middle_gives_exactly_the_rest(
    recorded: Recorded, make_replay: MakeReplay, client: httpx.AsyncClient
) -> None:
    server = await make_replay(recorded.path)
    url = str(server.make_url(f"/v1/runs/{recorded.run_id}/events"))
    for seen in (1, len(recorded.wire) // 2, len(recorded.wire) - 1):
        status, body = await raw_stream(client, url, last_event_id=f"{recorded.run_id}:{seen}")
        assert status == 200
        assert body == retry_field(DEFAULT_RETRY_MS) + b"".join(recorded.wire[seen:])


async def test_resume_after_done_is_204(
    recorded: Recorded, make_replay: MakeReplay, client: httpx.AsyncClient
) -> None:
    server = await make_replay(recorded.path)
    url = str(server.make_url(f"/v1/runs/{recorded.run_id}/events"))
    status, body = await raw_stream(
        client, url, last_event_id=f"{recorded.run_id}:{len(recorded.wire)}"
    )
    assert (status, body) == (204, b"")


async def test_one_shot_research_reconnect_resumes_a_recorded_run(
    recorded: Recorded, make_replay: MakeReplay, client: httpx.AsyncClient
) -> None:
    server = await make_replay(recorded.path)
    url = str(server.make_url("/v1/research").with_query(q=recorded.question))
    status, body = await raw_stream(client, url, last_event_id=f"{recorded.run_id}:3")
    assert status == 200
    assert body == retry_field(DEFAULT_RETRY_MS) + b"".join(recorded.wire[3:])


# --- the JSON API ----------------------------------------------------------------------------


async def test_snapshot_matches_the_recorded_runs_snapshot(
    recorded: Recorded, make_replay: MakeReplay, client: httpx.AsyncClient
) -> None:
    server = await make_replay(recorded.path)
    response = await client.get(str(server.make_url(f"/v1/runs/{recorded.run_id}")))
    assert response.status_code == 200
    assert response.json() == recorded.snapshot
    assert response.json()["status"] == "completed"


async def test_runs_list_shows_every_recording_newest_first(
    service: Service,
    make_replay: MakeReplay,
    client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    first = await record(service, client, tmp_path / "first.jsonl", question="First?")
    service.llm.fail_with = "the model fell over"
    failed = await record(service, client, tmp_path / "failed.jsonl", question="Second?")
    server = await make_replay(first.path, failed.path)

    listing = (await client.get(str(server.make_url("/v1/runs")))).json()
    assert [run["id"] for run in listing["runs"]] == [failed.run_id, first.run_id]
    # The listing has each run in brief, as the live service listed it.
    live = (await client.get(service.url("/v1/runs"))).json()["runs"]
    assert listing["runs"] == live
    for entry, recorded in zip(listing["runs"], (failed, first), strict=True):
        snapshot = recorded.snapshot
        assert entry["status"] == snapshot["status"]
        assert entry["question"] == snapshot["question"]
        assert entry["event_count"] == snapshot["event_count"]
        assert entry["source_count"] == len(snapshot["sources"])
    assert listing["runs"][0]["status"] == "failed"
    assert listing["runs"][0]["error_code"] == "llm_error"
    status, body = await raw_stream(
        client, str(server.make_url(f"/v1/runs/{failed.run_id}/events"))
    )
    assert status == 200
    assert body == retry_field(DEFAULT_RETRY_MS) + b"".join(failed.wire)


async def test_retention_deletes_no_recording_however_old_or_many(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A replay server serves every recording it was given for as long as it runs: the
    retention limits of the service's own runs do not apply to them."""
    paths = []
    for name in ("builtin_completed", "builtin_failed"):
        lines = (RECORDINGS / f"{name}.jsonl").read_text(encoding="utf-8").split("\n")
        header = json.loads(lines[0])
        header["created_at"] = "2020-01-01T00:00:00.000Z"  # years past --retention-days
        paths.append(tmp_path / f"{name}.jsonl")
        paths[-1].write_text("\n".join([json.dumps(header), *lines[1:]]), encoding="utf-8")
    settings = Settings(data_dir=tmp_path / "replay-data", retention_days=1, retention_runs=1)
    server = TestServer(replay_app(settings, load_recordings(paths), speed=INSTANT))
    await server.start_server()
    try:
        listing = (await client.get(str(server.make_url("/v1/runs")))).json()
        assert len(listing["runs"]) == 2
        for run in listing["runs"]:
            snapshot = await client.get(str(server.make_url(f"/v1/runs/{run['id']}")))
            assert snapshot.status_code == 200
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/runs"),
        ("GET", "/v1/research?q=Anything%20new%3F"),
        ("POST", "/v1/runs/{run_id}/cancel"),
    ],
)
async def test_starting_or_cancelling_runs_is_refused_clearly(
    recorded: Recorded,
    make_replay: MakeReplay,
    client: httpx.AsyncClient,
    method: str,
    path: str,
) -> None:
    server = await make_replay(recorded.path)
    url = str(server.make_url("/")).rstrip("/") + path.format(run_id=recorded.run_id)
    response = await client.request(method, url, json={"question": "Anything new?"})
    assert response.status_code == 409
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/replay-only")
    assert "this is a replay server" in problem["detail"]
    listing = (await client.get(str(server.make_url("/v1/runs")))).json()
    assert [run["id"] for run in listing["runs"]] == [recorded.run_id]


async def test_replay_opens_no_provider_and_its_stand_ins_refuse_work(
    recorded: Recorded, make_replay: MakeReplay
) -> None:
    server = await make_replay(recorded.path)
    assert (server.app[LLM].name, server.app[SEARCH].name) == ("replay", "replay")
    with pytest.raises(LLMError, match="replay server"):
        await NoModel().plan(PlanRequest(question="q", breadth=1, report=RecordingReporter()))
    with pytest.raises(LLMError, match="replay server"):
        NoModel().synthesize(AnswerRequest(question="q", sources=[], report=RecordingReporter()))
    with pytest.raises(SearchError, match="replay server"):
        await NoSearch().search("q", limit=1)


# --- pacing ----------------------------------------------------------------------------------


async def test_paced_replay_delivers_the_whole_stream_in_order(
    service: Service, make_replay: MakeReplay, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    service.llm.pieces = PIECES
    # 40 ms between events as recorded; at speed 200 the run plays in a few milliseconds.
    run = await record(
        service,
        client,
        tmp_path / "paced.jsonl",
        retime=lambda events: [40 * e.seq for e in events],
    )
    server = await make_replay(run.path, speed=200)
    status, body = await raw_stream(client, str(server.make_url(f"/v1/runs/{run.run_id}/events")))
    assert status == 200
    assert body == retry_field(DEFAULT_RETRY_MS) + b"".join(run.wire)


def answer_now_end_later(events: list[Event]) -> list[int]:
    """The answer at once; what follows it (synthesizing completed, done) an hour later."""
    last_token = max(e.seq for e in events if e.name == "token")
    return [0 if e.seq <= last_token else 3_600_000 for e in events]


async def test_paced_replay_is_live_and_stopping_plays_the_rest_at_once(
    service: Service, make_replay: MakeReplay, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    service.llm.pieces = PIECES

    run = await record(service, client, tmp_path / "slow.jsonl", retime=answer_now_end_later)
    server = await make_replay(run.path, speed=1)
    url = str(server.make_url(f"/v1/runs/{run.run_id}/events"))
    head = await listen(client, url, stop=after_event("token", len(PIECES)))
    snapshot = (await client.get(str(server.make_url(f"/v1/runs/{run.run_id}")))).json()
    assert snapshot["status"] == "running"
    assert snapshot["answer"] == "".join(PIECES)

    assert head.ids == [f"{run.run_id}:{seq}" for seq in range(1, len(head.events) + 1)]

    retry = retry_field(DEFAULT_RETRY_MS)
    headers = {"Last-Event-ID": head.ids[-1]}
    async with client.stream("GET", url, headers=headers) as response:
        chunks = response.aiter_bytes()
        opening = b""
        while len(opening) < len(retry):
            opening += await anext(chunks)
        # The listener is now waiting for the hour-late events; stopping the server plays them.
        assert opening == retry
        await server.close()
        rest = b"".join([chunk async for chunk in chunks])
    assert rest == b"".join(run.wire[len(head.events) :])
    assert b"event: done" in run.wire[-1]


async def test_resuming_from_an_event_not_yet_played_waits_through_the_ones_before_it(
    service: Service, make_replay: MakeReplay, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A restarted replay server's listener resumes where it was: its event comes after
    others (100 ms apart here). The first of them used to end the wait: `400`, never issued,
    and a browser's EventSource gives up for good on a 400."""
    service.llm.pieces = PIECES
    run = await record(
        service,
        client,
        tmp_path / "paced.jsonl",
        retime=lambda events: [100 * e.seq for e in events],
    )
    server = await make_replay(run.path, speed=1)
    url = str(server.make_url(f"/v1/runs/{run.run_id}/events"))
    status, body = await raw_stream(client, url, last_event_id=f"{run.run_id}:5")
    assert status == 200, body
    assert body == retry_field(DEFAULT_RETRY_MS) + b"".join(run.wire[5:])


async def test_snapshots_of_a_run_still_playing_read_only_its_new_events(
    service: Service,
    make_replay: MakeReplay,
    client: httpx.AsyncClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run that is not this process's to execute (played back; on another node) once had its
    whole log folded for every snapshot: 1.2 s of the loop each, for 300,000 events."""
    service.llm.pieces = PIECES

    run = await record(service, client, tmp_path / "slow.jsonl", retime=answer_now_end_later)
    server = await make_replay(run.path, speed=1)
    url = str(server.make_url(f"/v1/runs/{run.run_id}/events"))
    head = await listen(client, url, stop=after_event("token", len(PIECES)))
    log = server.app[MANAGER].log
    reads: list[int] = []
    read = log.read

    async def counted(run_id: str, *, after: int, limit: int | None = None) -> list[Event]:
        reads.append(after)
        return await read(run_id, after=after, limit=limit)

    monkeypatch.setattr(log, "read", counted)
    snapshot = str(server.make_url(f"/v1/runs/{run.run_id}"))
    first = (await client.get(snapshot)).json()
    again = (await client.get(snapshot)).json()
    assert first == again
    assert first["answer"] == "".join(PIECES)
    assert reads[0] == 0
    assert reads[1:] == [len(head.events)]  # only what came after the state it keeps


def test_speed_must_be_positive() -> None:
    with pytest.raises(ValueError, match="speed must be > 0"):
        ReplayPlayer([], speed=0)


# --- the command -----------------------------------------------------------------------------


def _bad_files(good: str) -> dict[str, tuple[str, int]]:
    """Broken recordings: file text, and the line the error must name."""
    lines = good.split("\n")[:-1]
    return {
        "not-json.jsonl": ("\n".join([*lines[:2], "{oops", *lines[3:]]) + "\n", 3),
        "no-done.jsonl": ("\n".join(lines[:-1]) + "\n", len(lines) - 1),
        "bad-event.jsonl": ("\n".join([lines[0], lines[1].replace('"phase"', '"nope"', 1)]), 2),
        "not-a-recording.jsonl": ('{"hello": "world"}\n', 1),
    }


def test_bad_recording_exits_2_naming_the_file_and_line(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = recorded.path.read_text(encoding="utf-8")
    for name, (text, line) in _bad_files(good).items():
        bad = tmp_path / name
        bad.write_text(text, encoding="utf-8")
        assert main(["replay", str(bad), "--port", "0"]) == 2, name
        assert capsys.readouterr().err.startswith(f"research-service: {bad}, line {line}: ")


def replay_from_the_shell(path: Path) -> subprocess.CompletedProcess[str]:
    """`research-service replay PATH --port 0` as a shell runs it (a bad file: it exits)."""
    return subprocess.run(
        [sys.executable, "-m", "research_service", "replay", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_recording_from_the_shell_exits_2_without_a_traceback(
    recorded: Recorded, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(recorded.path.read_text(encoding="utf-8").replace("{", "[", 2), "utf-8")
    result = replay_from_the_shell(bad)
    assert result.returncode == 2
    assert result.stderr.startswith(f"research-service: {bad}, line 1: "), result.stderr
    assert "Traceback" not in result.stderr


SHIPPED = Path(__file__).resolve().parent / "recordings"
Line = dict[str, Any]  # one event line of a recording, parsed


def _phase(phase: str, status: str) -> Callable[[Line], bool]:
    return lambda line: (
        line["event"] == "phase"
        and line["data"]["phase"] == phase
        and line["data"]["status"] == status
    )


def _named(name: str) -> Callable[[Line], bool]:
    return lambda line: line["event"] == name


def _put(**fields: Any) -> Callable[[dict[str, Any]], None]:
    """Set fields of the data (a value of ... removes the field)."""

    def change(data: dict[str, Any]) -> None:
        for key, value in fields.items():
            if value is ...:
                del data[key]
            else:
                data[key] = value

    return change


def _first_source(**fields: Any) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["sources"][0].update(fields)


@dataclass(frozen=True)
class WrongData:
    """A shipped recording whose first event matching `where` has its data changed."""

    name: str
    where: Callable[[Line], bool]
    change: Callable[[dict[str, Any]], None]
    says: str  # the reason `replay` gives after "<file>, line <n>: "
    file: str = "builtin_completed.jsonl"


WRONG_DATA = [
    WrongData(
        "token text a number",
        _named("token"),
        _put(text=7),
        "field 'data.text' of token must be a string, not a number",
    ),
    WrongData(
        "token without text",
        _named("token"),
        _put(text=...),
        "field 'data.text' of token is missing",
    ),
    WrongData(
        "unknown phase",
        _phase("planning", "started"),
        _put(phase="reviewing"),
        "field 'data.phase' of phase must be one of planning, searching, synthesizing, not "
        "'reviewing'",
    ),
    WrongData(
        "a status that phase does not have",
        _phase("synthesizing", "started"),
        _put(status="review"),
        "field 'data.status' of phase must be one of started, progress, completed, not 'review'",
    ),
    WrongData(
        "plan queries an object",
        _phase("planning", "completed"),
        _put(queries={"q": "json"}),
        "field 'data.queries' of phase must be an array, not an object",
    ),
    WrongData(
        "progress sources a string",
        _phase("searching", "progress"),
        _put(sources="none"),
        "field 'data.sources' of phase must be an array, not a string",
    ),
    WrongData(
        "progress count a string",
        _phase("searching", "progress"),
        _put(completed="1"),
        "field 'data.completed' of phase must be an integer, not a string",
    ),
    WrongData(
        "a field of another kind of phase",
        _phase("planning", "started"),
        _put(queries=["json"]),
        "field 'data.queries' of phase has no place in 'planning started'",
    ),
    WrongData(
        "done sources not source objects",
        _named("done"),
        _put(sources=["https://docs.python.org/3/"]),
        "field 'data.sources[0]' of done must be an object, not a string",
    ),
    WrongData(
        "done source id a string",
        _named("done"),
        _first_source(id="1"),
        "field 'data.sources[0].id' of done must be an integer, not a string",
    ),
    WrongData(
        "done answer a number",
        _named("done"),
        _put(answer=42),
        "field 'data.answer' of done must be a string, not a number",
    ),
    WrongData(
        "done error a string",
        _named("done"),
        _put(error="boom"),
        "field 'data.error' of done must be null or an object, not a string",
    ),
    WrongData(
        "done error for a completed run",
        _named("done"),
        _put(error={"code": "internal", "message": "a completed run has no error"}),
        "field 'data.error' of done must be null, not an object",
    ),
    WrongData(
        "done without timings",
        _named("done"),
        _put(timings_ms=...),
        "field 'data.timings_ms' of done is missing",
    ),
    WrongData(
        "error code a list",
        _named("error"),
        _put(code=["no_sources"]),
        "field 'data.code' of error must be a string, not an array",
        file="builtin_failed.jsonl",
    ),
]


@pytest.mark.parametrize("case", WRONG_DATA, ids=[case.name for case in WRONG_DATA])
def test_event_data_of_the_wrong_shape_exits_2_naming_the_line_and_the_field(
    case: WrongData, tmp_path: Path
) -> None:
    """A hand-edited recording is refused at load, not served to fail on a snapshot later."""
    lines = (SHIPPED / case.file).read_text(encoding="utf-8").split("\n")
    index = next(i for i, line in enumerate(lines[1:], 1) if line and case.where(json.loads(line)))
    event = json.loads(lines[index])
    case.change(event["data"])
    lines[index] = json.dumps(event, ensure_ascii=False)
    bad = tmp_path / "hand-edited.jsonl"
    bad.write_text("\n".join(lines), encoding="utf-8")
    result = replay_from_the_shell(bad)
    assert (result.returncode, result.stderr) == (
        2,
        f"research-service: {bad}, line {index + 1}: {case.says}\n",
    )


async def test_data_fields_a_later_release_may_add_are_kept_and_replayed_byte_for_byte(
    make_replay: MakeReplay, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """Fields the schemas do not name, in data or in a source, load and go out as recorded."""
    lines = (SHIPPED / "builtin_completed.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
    events = [json.loads(line) for line in lines[1:]]
    for event in events:
        event["data"]["trace"] = {"span": event["seq"], "tags": ["a", None]}
    events[-1]["data"]["sources"][0]["score"] = 0.75
    path = tmp_path / "newer.jsonl"
    path.write_text(
        "\n".join([lines[0], *(json.dumps(e, ensure_ascii=False) for e in events)]) + "\n",
        encoding="utf-8",
    )
    (recording,) = load_recordings([path])
    assert [e.data for e in recording.events] == [e["data"] for e in events]

    server = await make_replay(path)
    status, body = await raw_stream(
        client, str(server.make_url(f"/v1/runs/{recording.run_id}/events"))
    )
    assert status == 200
    assert body == retry_field(DEFAULT_RETRY_MS) + b"".join(recording_wire(path))
    assert body.count(b'"trace":{"span":') == len(events)
    snapshot = await client.get(str(server.make_url(f"/v1/runs/{recording.run_id}")))
    assert snapshot.status_code == 200
    assert snapshot.json()["sources"][0]["score"] == 0.75


async def test_a_done_without_its_total_time_is_snapshotted_with_the_event_s_time(
    make_replay: MakeReplay, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The schemas do not say which timings a done holds: a snapshot must not need `total`."""
    lines = (SHIPPED / "builtin_completed.jsonl").read_text(encoding="utf-8").split("\n")[:-1]
    done = json.loads(lines[-1])
    done["data"]["timings_ms"] = {"planning": 1}
    path = tmp_path / "no-total.jsonl"
    path.write_text("\n".join([*lines[:-1], json.dumps(done)]) + "\n", encoding="utf-8")
    (recording,) = load_recordings([path])
    server = await make_replay(path)
    # The whole stream, to its done: the run has ended.
    status, _ = await raw_stream(
        client, str(server.make_url(f"/v1/runs/{recording.run_id}/events"))
    )
    assert status == 200
    snapshot = await client.get(str(server.make_url(f"/v1/runs/{recording.run_id}")))
    assert snapshot.status_code == 200, snapshot.text
    assert snapshot.json()["status"] == "completed"
    assert snapshot.json()["timings_ms"]["total"] == done["t_ms"]


def test_one_bad_file_among_good_ones_stops_the_command(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    assert main(["replay", str(recorded.path), str(missing)]) == 2
    assert capsys.readouterr().err.startswith(f"research-service: {missing}: cannot read")


def test_the_same_run_twice_is_refused(
    recorded: Recorded, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(recorded.path.read_bytes())
    assert main(["replay", str(recorded.path), str(copy)]) == 2
    assert f"run {recorded.run_id} is recorded in both" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--speed", "0"], "'0' is not a speed"),
        (["--speed", "fast"], "'fast' is not a speed"),
        (["--speed", "2", "--instant"], "not allowed with argument"),
    ],
)
def test_bad_pace_flags_are_usage_errors(
    recorded: Recorded, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(recorded.path), *flags])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


async def test_replay_command_serves_the_recording(
    recorded: Recorded, client: httpx.AsyncClient
) -> None:
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "research_service", "replay", str(recorded.path)),
        *("--instant", "--port", "0"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log = b""
    try:
        async with asyncio.timeout(60):
            while (line := await process.stderr.readline()) and not READY.search(line):
                log += line
        match = READY.search(line)
        assert match, log.decode()
        base = match[1].decode()
        status, body = await raw_stream(client, f"{base}/v1/runs/{recorded.run_id}/events")
        assert status == 200
        assert body == retry_field(DEFAULT_RETRY_MS) + b"".join(recorded.wire)
        created = await client.post(f"{base}/v1/runs", json={"question": "New?"})
        assert created.status_code == 409
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            await process.communicate()
    assert process.returncode == 0


def test_replay_help_names_the_flags_and_the_refusal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("FILE [FILE ...]", "--speed X", "--instant", "--port", "409", "exit 2"):
        assert expected in text
