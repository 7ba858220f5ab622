"""Recordings: the JSON Lines format, GET /v1/runs/{id}/recording and `research-service export`."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from research_service import __version__
from research_service.app import RUN_STORE_FILE, create_app
from research_service.cli import main
from research_service.events import Event
from research_service.recording import (
    RecordedEvent,
    RecordingError,
    dump_recording,
    load_recording,
    parse_recording,
    recording_lines,
)
from research_service.recordings.export import ExportError, download
from research_service.runs import sqlite_log
from research_service.runs.models import RunOptions, RunRecord
from research_service.settings import Settings
from tests.conftest import MakeService, Service
from tests.fakes import ScriptedLLM, ScriptedSearch
from tests.sse import listen

ROOT = Path(__file__).resolve().parent.parent
RUN_ID = "0123456789abcdef"
UNKNOWN_ID = "fedcba9876543210"
# 2023-11-14T22:13:20.250Z, exact to the millisecond as the header keeps it.
CREATED_AT = 1_700_000_000.25
RECORD = RunRecord(
    RUN_ID, "Why is the sky blue?", RunOptions(breadth=2, max_tokens=500), CREATED_AT
)


def _events() -> list[Event]:
    done = {
        "status": "completed",
        "answer": "Rayleigh\u2028scattering [1].",
        "sources": [{"id": 1, "title": "Sky — blue", "url": "https://example.org/sky"}],
        "timings_ms": {"total": 40},
        "error": None,
        "usage": None,
        "truncated": False,
    }
    steps: list[tuple[str, dict[str, Any], int]] = [
        ("phase", {"phase": "planning", "status": "started", "elapsed_ms": 0}, 0),
        ("token", {"text": "Rayleigh\u2028"}, 12),
        ("token", {"text": "scattering [1]."}, 12),
        ("done", done, 40),
    ]
    return [
        Event.create(RUN_ID, seq, name, data, t_ms=t_ms)
        for seq, (name, data, t_ms) in enumerate(steps, start=1)
    ]


def _lines() -> list[str]:
    return list(recording_lines(RECORD, _events()))


# --- the format ------------------------------------------------------------------------------


def test_the_header_line_is_exact() -> None:
    assert _lines()[0] == (
        '{"format":"research-service-recording","version":1,"run_id":"0123456789abcdef",'
        '"question":"Why is the sky blue?","options":{"breadth":2,"max_sources":8,"depth":1,'
        f'"max_tokens":500}},"created_at":"2023-11-14T22:13:20.250Z","service_version":'
        f'"{__version__}"}}\n'
    )
    assert _lines()[2] == '{"seq":2,"event":"token","data":{"text":"Rayleigh\u2028"},"t_ms":12}\n'


def test_dump_then_parse_gives_back_the_record_and_events() -> None:
    text = dump_recording(RECORD, _events())
    assert text == "".join(_lines())
    assert text.count("\n") == 5
    recording = parse_recording(text)
    assert recording.record() == RECORD
    assert (recording.run_id, recording.question) == (RUN_ID, RECORD.question)
    assert recording.options == RECORD.options
    assert recording.events == [RecordedEvent(e.seq, e.name, e.data, e.t_ms) for e in _events()]


def test_load_recording_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(dump_recording(RECORD, _events()).encode())
    assert load_recording(path) == parse_recording(dump_recording(RECORD, _events()))


def test_load_recording_takes_a_str_path_too(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_bytes(dump_recording(RECORD, _events()).encode())
    assert load_recording(str(path)) == load_recording(path)
    with pytest.raises(RecordingError, match="cannot read the file") as caught:
        load_recording(str(tmp_path / "nope.jsonl"))
    assert str(caught.value).startswith(str(tmp_path / "nope.jsonl"))


@dataclass(frozen=True)
class Broken:
    """A recording made bad by `change` (applied to its lines), and the error it must get."""

    name: str
    change: Callable[[list[str]], list[str]]
    line: int
    says: str


def _set(index: int, **fields: Any) -> Callable[[list[str]], list[str]]:
    """Change fields of line `index` (0-based); a value of ... removes the field."""

    def change(lines: list[str]) -> list[str]:
        obj = json.loads(lines[index])
        for key, value in fields.items():
            if value is ...:
                del obj[key]
            else:
                obj[key] = value
        lines[index] = json.dumps(obj) + "\n"
        return lines

    return change


def _data(index: int, **fields: Any) -> Callable[[list[str]], list[str]]:
    """Change fields of the data of line `index` (0-based), an event line."""

    def change(lines: list[str]) -> list[str]:
        obj = json.loads(lines[index])
        obj["data"].update(fields)
        lines[index] = json.dumps(obj) + "\n"
        return lines

    return change


def _replace(index: int, text: str) -> Callable[[list[str]], list[str]]:
    def change(lines: list[str]) -> list[str]:
        lines[index] = text
        return lines

    return change


BROKEN = [
    Broken("empty", lambda lines: [], 1, "the file is empty"),
    Broken("header not JSON", _replace(0, "{format: 1}\n"), 1, "not JSON"),
    Broken("header an array", _replace(0, "[1, 2]\n"), 1, "a JSON array, not an object"),
    Broken("wrong format", _set(0, format="other"), 1, "field 'format' is 'other'"),
    Broken("no format", _set(0, format=...), 1, "field 'format' is missing"),
    Broken("newer version", _set(0, version=2), 1, "unsupported version 2; this release"),
    Broken("version a string", _set(0, version="1"), 1, "'version' must be an integer"),
    Broken("no question", _set(0, question=...), 1, "missing field 'question'"),
    Broken("run id a number", _set(0, run_id=7), 1, "'run_id' must be a string, not a number"),
    Broken("run id shape", _set(0, run_id="run-1"), 1, "16 lowercase hex characters"),
    Broken("options a list", _set(0, options=[]), 1, "'options' must be an object"),
    Broken("unknown option", _set(0, options={"width": 2}), 1, "unknown option 'width'"),
    Broken("option range", _set(0, options={"breadth": 99}), 1, "'options.breadth' must be"),
    Broken("created_at", _set(0, created_at="yesterday"), 1, "'created_at' is 'yesterday'"),
    Broken("no service_version", _set(0, service_version=...), 1, "'service_version'"),
    Broken("event not JSON", _replace(2, '{"seq": 2,\n'), 3, "not JSON"),
    Broken("event a string", _replace(2, '"token"\n'), 3, "a JSON string, not an object"),
    # JSON that json.loads reads only with errors of its own, or into values no service writes.
    Broken(
        "nested deep", _replace(1, "[" * 100_000 + "]" * 100_000 + "\n"), 2, "nested too deeply"
    ),
    Broken("huge integer", _replace(1, '{"seq": ' + "9" * 5000 + "}\n"), 2, "4300 digits"),
    Broken("NaN", _set(1, t_ms=float("nan")), 2, "NaN is not a JSON number"),
    # A number past a float's range read as infinity, streamed on as `Infinity` (not JSON).
    Broken(
        "1e400",
        _replace(2, '{"seq":2,"event":"token","data":{"text":"x","n":1e400},"t_ms":3}\n'),
        3,
        "1e400 is beyond what a float holds",
    ),
    # Dates and durations past what the service's arithmetic on them holds (500s, a player
    # that died unseen): created_at from 1970 to 9000 in RFC 3339, t_ms at most a year.
    Broken(
        "created_at past 9000",
        _set(0, created_at="9999-12-31T23:59:59.999-14:00"),
        1,
        "not from 1970 to 9000",
    ),
    Broken("created_at year 1", _set(0, created_at="0001-01-01T00:00:00+14:00"), 1, "not from"),
    Broken("created_at a week date", _set(0, created_at="2026-W01-1T00:00:00Z"), 1, "RFC 3339"),
    Broken("t_ms of 10**15", _set(4, t_ms=10**15), 5, "t_ms is 1000000000000000; it counts"),
    Broken(
        "an integer past a float",
        _replace(
            2, '{"seq":2,"event":"token","data":{"text":"x","n":1' + "0" * 400 + '},"t_ms":3}\n'
        ),
        3,
        "is beyond the integers a service writes",
    ),
    Broken("t_ms of 10**400", _set(4, t_ms=10**400), 5, "beyond the integers a service writes"),
    Broken("version of 10**4000", _set(0, version=10**4000), 1, "beyond the integers a service"),
    Broken("version of 10**17", _set(0, version=10**17), 1, "version 1000000000000000…;"),
    Broken("lone surrogate", _set(0, question="hi \ud800 there"), 1, "a lone surrogate"),
    Broken("blank line", _replace(2, "\n"), 3, "blank line"),
    Broken("seq gap", _set(2, seq=3), 3, "seq is 3, expected 2; seq counts up from 1"),
    Broken("first seq", _set(1, seq=0), 2, "seq is 0, expected 1"),
    Broken("seq a boolean", _set(1, seq=True), 2, "'seq' must be an integer, not a boolean"),
    Broken("unknown event", _set(2, event="tok"), 3, "unknown event 'tok'; events are"),
    Broken("no data", _set(3, data=...), 4, "missing field 'data'"),
    Broken("no t_ms", _set(3, t_ms=...), 4, "missing field 't_ms'"),
    Broken("negative t_ms", _set(1, t_ms=-1), 2, "t_ms is -1"),
    Broken("t_ms back", _set(3, t_ms=5), 4, "t_ms goes back from 12 to 5"),
    Broken("done status", _set(4, data={}), 5, "'data.status' of done must be one of"),
    # Data its event's JSON Schema refuses (more, through the replay command: test_replay.py).
    Broken("text a number", _data(2, text=7), 3, "'data.text' of token must be a string, not a"),
    Broken("unknown phase", _data(1, phase="idle"), 2, "'data.phase' of phase must be one of"),
    Broken(
        "source id a string",
        _data(4, sources=[{"id": "1", "title": "Sky", "url": "https://example.org/sky"}]),
        5,
        "field 'data.sources[0].id' of done must be an integer, not a string",
    ),
    Broken("no done", lambda lines: lines[:4], 4, "ends at line 4 without a done event"),
    Broken("header only", lambda lines: lines[:1], 1, "without a done event"),
    Broken(
        "after done",
        lambda lines: [*lines, '{"seq":5,"event":"token","data":{"text":"x"},"t_ms":50}\n'],
        6,
        "an event after done (line 5)",
    ),
]


@pytest.mark.parametrize("case", BROKEN, ids=[case.name for case in BROKEN])
def test_a_bad_recording_names_the_line_and_why(case: Broken) -> None:
    text = "".join(case.change(_lines()))
    with pytest.raises(RecordingError) as caught:
        parse_recording(text, source="bad.jsonl")
    error = caught.value
    assert error.line == case.line
    assert str(error).startswith(f"bad.jsonl, line {case.line}: ")
    assert case.says in str(error)


def test_the_version_error_says_which_versions_are_read() -> None:
    with pytest.raises(RecordingError, match=r"reads version 1$"):
        parse_recording("".join(_set(0, version=9)(_lines())))


def test_a_file_that_is_not_utf8_fails_at_its_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    lines = _lines()
    path.write_bytes(
        "".join(lines[:2]).encode() + lines[2].encode().replace(b"\xe2\x80\xa8", b"\xe9")
    )
    with pytest.raises(RecordingError, match=r"latin1\.jsonl, line 3: not UTF-8") as caught:
        load_recording(path)
    assert caught.value.line == 3


def test_a_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="cannot read the file") as caught:
        load_recording(tmp_path / "nope.jsonl")
    assert caught.value.line is None
    assert str(caught.value).startswith(str(tmp_path / "nope.jsonl"))


def test_crlf_line_ends_are_read() -> None:
    text = dump_recording(RECORD, _events()).replace("\n", "\r\n")
    assert parse_recording(text).record() == RECORD


# --- GET /v1/runs/{id}/recording -------------------------------------------------------------


async def test_the_recording_endpoint_serves_a_finished_run(
    service: Service, client: httpx.AsyncClient
) -> None:
    run_id = await service.create(client, "What is up?", breadth=1)
    streamed = await listen(client, service.url(f"/v1/runs/{run_id}/events"))
    response = await client.get(service.url(f"/v1/runs/{run_id}/recording"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/x-ndjson; charset=utf-8"
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="research-{run_id}.jsonl"'
    )
    recording = parse_recording(response.text)
    record = await service.manager.get(run_id)
    restored = recording.record()
    assert (restored.id, restored.question, restored.options) == (
        record.id,
        record.question,
        record.options,
    )
    # The header keeps the creation time to the millisecond.
    assert restored.created_at == pytest.approx(record.created_at, abs=0.001)
    assert restored.created_iso == record.created_iso
    assert recording.header["created_at"] == record.created_iso
    assert recording.header["service_version"] == __version__
    assert [f"{run_id}:{e.seq}" for e in recording.events] == streamed.ids
    assert [e.event for e in recording.events] == streamed.names
    assert [e.data for e in recording.events] == [json.loads(e.data) for e in streamed.events]
    events = await service.manager.log.read(run_id, after=0)
    assert response.content == dump_recording(record, events).encode()


async def test_the_recording_of_an_unknown_run_is_404(
    service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.get(service.url(f"/v1/runs/{UNKNOWN_ID}/recording"))
    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/problem+json"


async def test_the_recording_of_a_live_run_is_409_until_done(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.hold_after = 1
    run_id = await service.create(client)
    await service.until_held()
    try:
        response = await client.get(service.url(f"/v1/runs/{run_id}/recording"))
    finally:
        service.llm.release.set()
    assert response.status_code == 409
    assert response.headers["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/run-not-finished")
    assert (
        problem["detail"]
        == f"run {run_id} has not finished; wait for its done event, then ask again"
    )
    await service.wait_done(run_id)
    response = await client.get(service.url(f"/v1/runs/{run_id}/recording"))
    assert response.status_code == 200


async def test_download_reports_the_problem_detail(service: Service) -> None:
    with pytest.raises(ExportError, match=f"answered 404: no run with id '{UNKNOWN_ID}'"):
        await download(service.url("/"), UNKNOWN_ID)


# --- research-service export -----------------------------------------------------------------


async def _export(*args: str) -> tuple[int, bytes, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESEARCH_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "research_service",
        "export",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout, stderr.decode()


async def test_export_reads_a_finished_run_from_the_sqlite_store(tmp_path: Path) -> None:
    settings = Settings(store="sqlite", data_dir=tmp_path)
    app = create_app(settings, llm=ScriptedLLM(), search=ScriptedSearch())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            created = await client.post(str(server.make_url("/v1/runs")), json={"question": "q?"})
            run_id = created.json()["id"]
            await listen(client, str(server.make_url(f"/v1/runs/{run_id}/events")))
            served = await client.get(str(server.make_url(f"/v1/runs/{run_id}/recording")))
    finally:
        await server.close()

    code, stdout, stderr = await _export(run_id, "--data-dir", str(tmp_path))
    assert (code, stderr) == (0, "")
    assert stdout == served.content
    assert parse_recording(stdout.decode()).events[-1].event == "done"

    out = tmp_path / "out.jsonl"
    code, stdout, stderr = await _export(run_id, "--data-dir", str(tmp_path), "-o", str(out))
    assert (code, stdout) == (0, b"")
    assert out.read_bytes() == served.content
    assert f"wrote the recording of run {run_id} to {out}" in stderr


async def test_export_downloads_from_a_server(service: Service, client: httpx.AsyncClient) -> None:
    run_id = await service.create(client)
    await service.wait_done(run_id)
    served = await client.get(service.url(f"/v1/runs/{run_id}/recording"))
    code, stdout, stderr = await _export(run_id, "--server", service.url("/"))
    assert (code, stderr) == (0, "")
    assert stdout == served.content


async def test_export_sends_the_api_key_to_a_server_with_auth(
    make_service: MakeService, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{'a' * 40}\nbob:{'b' * 40}\n")
    service = await make_service(auth="keys", api_keys_file=keys)
    alice = {"Authorization": f"Bearer {'a' * 40}"}
    created = await client.post(service.url("/v1/runs"), json={"question": "q?"}, headers=alice)
    run_id = created.json()["id"]
    await service.wait_done(run_id)
    served = await client.get(service.url(f"/v1/runs/{run_id}/recording"), headers=alice)
    assert served.status_code == 200

    code, stdout, stderr = await _export(
        run_id, "--server", service.url("/"), "--api-key", "a" * 40
    )
    assert (code, stderr) == (0, "")
    assert stdout == served.content
    # Another key's export of it is the unknown run's answer; no key is a 401; neither leaks.
    code, stdout, stderr = await _export(
        run_id, "--server", service.url("/"), "--api-key", "b" * 40
    )
    assert (code, stdout) == (2, b"")
    assert f"answered 404: no run with id '{run_id}'" in stderr
    code, stdout, stderr = await _export(run_id, "--server", service.url("/"))
    assert (code, stdout) == (2, b"")
    assert "answered 401" in stderr
    assert "b" * 40 not in stderr


def _store_with_an_open_run(data_dir: Path) -> None:
    async def make() -> None:
        store = await sqlite_log.open(data_dir / RUN_STORE_FILE)
        await store.create_run(RunRecord(RUN_ID, "still going?"))
        started = {"phase": "planning", "status": "started", "elapsed_ms": 0}
        await store.append(Event.create(RUN_ID, 1, "phase", started, t_ms=0))
        await store.close()

    asyncio.run(make())


@pytest.mark.parametrize(
    ("run_id", "store", "says"),
    [
        (UNKNOWN_ID, True, f"no run {UNKNOWN_ID} in the run store"),
        (RUN_ID, True, f"run {RUN_ID} has not finished; wait for its done event"),
        ("not-an-id", True, "'not-an-id' is not a run id"),
        (RUN_ID, False, "runs are only kept with --store sqlite"),
    ],
)
def test_export_errors_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], run_id: str, store: bool, says: str
) -> None:
    if store:
        _store_with_an_open_run(tmp_path)
    assert main(["export", run_id, "--data-dir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("research-service: ")
    assert says in err
    if not store:
        assert f"no run store at {tmp_path / RUN_STORE_FILE}" in err
        assert not (tmp_path / RUN_STORE_FILE).exists()


@pytest.mark.parametrize(
    ("contents", "says"),
    [(b"", "it holds no runs table"), (b"not a database" * 100, "file is not a database")],
    ids=["empty", "garbage"],
)
def test_export_from_a_file_that_is_no_run_store_says_so_and_leaves_it_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], contents: bytes, says: str
) -> None:
    """An empty file was migrated into a run store (export only reads); a corrupt one said it
    "cannot be written", "or point --data-dir elsewhere"."""
    store = tmp_path / RUN_STORE_FILE
    store.write_bytes(contents)
    assert main(["export", RUN_ID, "--data-dir", str(tmp_path)]) == 2
    _, err = capsys.readouterr()
    assert err == (
        f"research-service: cannot read the run store {store} ({says}); is it a "
        "research-service run store?\n"
    )
    assert store.read_bytes() == contents


def test_escaped_surrogate_pairs_are_text_and_load() -> None:
    # json.dumps writes "😀" as the pair \ud83d\ude00: one character, not a lone surrogate.
    text = "".join(_set(0, question="Why 😀?")(_lines()))
    assert "\\ud83d\\ude00" in text
    assert parse_recording(text).header["question"] == "Why 😀?"


def test_a_huge_file_is_read_a_line_at_a_time_and_a_huge_line_refused(tmp_path: Path) -> None:
    """A 3 GB file was read whole (then decoded, then split: three copies): a MemoryError's
    traceback under a memory limit. Now no line is read past 64 MiB."""
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as file:
        file.truncate(3 << 30)  # sparse: 3 GB of NULs, no line end
    with pytest.raises(RecordingError, match=r"line 1: longer than 64 MiB"):
        load_recording(path)
