"""The JSON Schemas of docs/schemas/: valid, exact, and true of every event the project ships.

Every event a test reads through tests/sse.py is checked against them too (tests.sse.listen);
these tests pin the schemas themselves: what they accept and what they refuse.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from jsonschema import Draft202012Validator  # type: ignore[import-untyped]  # no stubs

from research_service.events import EVENT_NAMES, encode, retry_field
from tests.openapi_check import (
    COMPONENTS,
    EVENT_SCHEMAS,
    SCHEMAS,
    check_event,
    check_recording_line,
    schema_file,
)
from tests.sse import listen

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = sorted((ROOT / "tests" / "recordings").glob("*.jsonl"))
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = "0123456789abcdef"
# A captured event in the docs: its id, name and data lines, as the service writes them.
DOC_EVENT = re.compile(r"^id: [0-9a-f]{16}:\d+\nevent: (\w+)\ndata: (.*)$", re.MULTILINE)
DOC_RECORDING_LINE = re.compile(r'^\{"(?:format":"research-service-recording|seq":\d).*\}$', re.M)

# One of every kind of `phase` event (docs/protocol.md's table), each as the service sends it.
PHASES: list[dict[str, Any]] = [
    {"phase": "planning", "status": "started", "elapsed_ms": 0},
    {
        "phase": "planning",
        "status": "review",
        "elapsed_ms": 4,
        "queries": ["json parse"],
        "round": 1,
        "review_url": f"/v1/runs/{RUN}/plan",
        "expires_in_s": 900,
        "expires_at": "2026-12-03T16:19:58.520Z",
        "feedback_allowed": True,
        "fallback": "the model's plan was not JSON",
    },
    {
        "phase": "planning",
        "status": "reviewed",
        "elapsed_ms": 5,
        "round": 1,
        "decision": "approved",
    },
    {
        "phase": "planning",
        "status": "reviewed",
        "elapsed_ms": 5,
        "round": 2,
        "decision": "edited",
        "queries": ["json.loads"],
    },
    {
        "phase": "planning",
        "status": "reviewed",
        "elapsed_ms": 5,
        "round": 1,
        "decision": "feedback",
        "feedback": "only the standard library",
    },
    {
        "phase": "planning",
        "status": "completed",
        "elapsed_ms": 6,
        "queries": ["json.loads"],
        "review": "edited",
    },
    {
        "phase": "planning",
        "status": "completed",
        "elapsed_ms": 6,
        "queries": ["q"],
        "fallback": "x",
    },
    {"phase": "searching", "status": "started", "elapsed_ms": 6, "total": 2, "round": 1},
    {
        "phase": "searching",
        "status": "progress",
        "elapsed_ms": 9,
        "query": "json parse",
        "completed": 1,
        "total": 2,
        "round": 1,
        "sources": [
            {"id": 1, "title": "json", "url": "https://docs.python.org/3/library/json.html"}
        ],
    },
    {
        "phase": "searching",
        "status": "progress",
        "elapsed_ms": 9,
        "query": "json load",
        "completed": 2,
        "total": 2,
        "round": 1,
        "error": "timed out after 10 s",
    },
    {"phase": "searching", "status": "progress", "elapsed_ms": 9, "round": 2, "queries": ["a b"]},
    {"phase": "searching", "status": "progress", "elapsed_ms": 9, "round": 3, "error": "boom"},
    {
        "phase": "searching",
        "status": "progress",
        "elapsed_ms": 9,
        "page": {"id": 1, "url": "https://example.org/", "chars": 1200},
    },
    {
        "phase": "searching",
        "status": "progress",
        "elapsed_ms": 9,
        "page": {
            "id": 2,
            "url": "http://10.0.0.1/",
            "error": {"code": "page_refused", "message": "not a public address"},
        },
    },
    {"phase": "searching", "status": "completed", "elapsed_ms": 10, "sources": 2, "rounds": 1},
    {
        "phase": "searching",
        "status": "completed",
        "elapsed_ms": 10,
        "sources": 2,
        "rounds": 2,
        "pages": 1,
    },
    {"phase": "synthesizing", "status": "started", "elapsed_ms": 10, "sources": 2},
    {
        "phase": "synthesizing",
        "status": "progress",
        "elapsed_ms": 11,
        "retrying": {"attempt": 2, "wait_ms": 500, "reason": "429 Too Many Requests"},
    },
    {"phase": "synthesizing", "status": "completed", "elapsed_ms": 12},
    {"phase": "synthesizing", "status": "completed", "elapsed_ms": 12, "truncated": True},
]
DONE: dict[str, Any] = {
    "status": "completed",
    "answer": "The answer [1].",
    "sources": [{"id": 1, "title": "json", "url": "https://x.org/", "snippet": "JSON"}],
    "timings_ms": {"planning": 1, "searching": 2, "synthesizing": 3, "total": 6},
    "error": None,
    "usage": {
        "prompt_tokens": 10,
        "completion_tokens": 4,
        "by_stage": {"planning": {"prompt_tokens": 2, "completion_tokens": 1}},
        "estimated": True,
        "budget": 16000,
    },
    "truncated": False,
}
FAILED = {"status": "failed", "error": {"code": "no_sources", "message": "nothing"}, "usage": None}


def test_every_schema_is_a_valid_draft_2020_12_schema() -> None:
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(COMPONENTS)
    for name in COMPONENTS:
        schema = schema_file(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"].endswith("/" + name)


def test_every_event_name_of_the_stream_has_a_schema() -> None:
    assert set(EVENT_SCHEMAS) == EVENT_NAMES


@pytest.mark.parametrize("data", PHASES, ids=lambda d: f"{d['phase']}-{d['status']}")
def test_every_kind_of_phase_event_is_accepted(data: dict[str, Any]) -> None:
    check_event("phase", data)


@pytest.mark.parametrize(
    ("name", "data", "why"),
    [
        ("phase", {**PHASES[0], "queries": []}, "a field its variant does not have"),
        ("phase", {"phase": "planning", "status": "started"}, "elapsed_ms missing"),
        ("phase", {**PHASES[0], "phase": "thinking"}, "an unknown phase"),
        ("phase", {**PHASES[2], "queries": ["x"]}, "approved with queries"),
        ("phase", {**PHASES[3], "feedback": "x"}, "edited with feedback"),
        ("phase", {**PHASES[4], "feedback": None}, "feedback that is not text"),
        ("phase", {**PHASES[8], "error": "x"}, "a finished query with sources and an error"),
        ("phase", {**PHASES[7], "round": 2}, "searching starts with round 1"),
        ("phase", {**PHASES[17], "retrying": {"attempt": 2}}, "retrying without wait_ms"),
        ("phase", {**PHASES[17], "retrying": {"attempt": 0, "wait_ms": 1, "reason": "x"}}, "no 0"),
        ("phase", {**PHASES[19], "truncated": False}, "truncated is only ever true"),
        ("token", {"text": ""}, "an empty piece"),
        ("token", {"text": "a", "seq": 1}, "an unknown field"),
        ("error", {"code": "no_sources", "message": "m"}, "phase missing (null when none)"),
        ("error", {"code": "No Sources", "message": "m", "phase": None}, "not a code"),
        ("done", {**DONE, "error": {"code": "x", "message": "m"}}, "completed with an error"),
        ("done", {**DONE, "status": "failed"}, "failed without an error"),
        ("done", {**DONE, **FAILED, "usage": {}}, "usage neither null nor whole"),
        ("done", {k: v for k, v in DONE.items() if k != "truncated"}, "truncated missing"),
        ("done", {**DONE, "sources": [{"id": 1, "title": "t", "url": "u"}]}, "no snippet"),
        (
            "done",
            {**DONE, **FAILED, "sources": [{"id": 1, "title": "t", "url": "u"}]},
            "no snippet, though this process ended the run",
        ),
        ("done", {**DONE, "status": "running"}, "not a final status"),
        ("ping", {}, "not an event of the stream"),
    ],
)
def test_the_schemas_refuse_what_the_contract_does_not_allow(
    name: str, data: dict[str, Any], why: str
) -> None:
    with pytest.raises(AssertionError):
        check_event(name, data)


def test_done_of_each_ending_is_accepted() -> None:
    check_event("done", DONE)
    check_event("done", {**DONE, **FAILED})
    cancelled = {"code": "cancelled", "message": "the run was cancelled on request"}
    check_event("done", {**DONE, "status": "cancelled", "error": cancelled, "truncated": True})
    # Another process ended it: the snippets went with the process that stopped.
    interrupted = {"code": "interrupted", "message": "the service stopped during the run"}
    brief = [{"id": 1, "title": "json", "url": "https://x.org/"}]
    check_event("done", {**DONE, **FAILED, "error": interrupted, "sources": brief})
    check_event("error", {"code": "interrupted", "message": "stopped", "phase": "searching"})
    check_event("error", {"code": "internal", "message": "a bug", "phase": None})


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
def test_every_shipped_recording_is_valid_line_by_line(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines.pop() == ""
    for number, line in enumerate(lines, start=1):
        try:
            check_recording_line(json.loads(line))
        except AssertionError as exc:
            raise AssertionError(f"{path.name}, line {number}: {exc}") from None


def test_the_recording_schema_checks_the_event_data_and_the_header() -> None:
    line = {"seq": 1, "event": "token", "data": {"text": "a"}, "t_ms": 0}
    check_recording_line(line)
    for bad in (
        {**line, "data": {"text": ""}},
        {**line, "event": "ping"},
        {**line, "t_ms": -1},
        {"format": "research-service-recording", "version": 2},
    ):
        with pytest.raises(AssertionError):
            check_recording_line(bad)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_event_and_recording_line_captured_in_the_docs_is_valid(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for name, data in DOC_EVENT.findall(text):
        if _abridged(data):
            continue
        check_event(name, json.loads(data))
    for line in DOC_RECORDING_LINE.findall(text):
        check_recording_line(json.loads(line))


def _abridged(data: str) -> bool:
    """A sample shortened by hand (`[…]` for a list): not JSON, and not meant to be."""
    try:
        json.loads(data)
    except ValueError:
        assert "…" in data, f"a sample that is neither JSON nor abridged: {data[:200]}"
        return True
    return False


@pytest.fixture
async def bad_stream() -> AsyncIterator[str]:
    """A server whose stream sends one `token` event the schema refuses."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(retry_field(3000) + encode(RUN, 1, "token", {"text": 7}))
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/events", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/events"))
    finally:
        await server.close()


async def test_listen_fails_the_test_on_an_event_its_schema_refuses(bad_stream: str) -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(AssertionError, match="'token' event violates its schema"):
            await listen(client, bad_stream)
