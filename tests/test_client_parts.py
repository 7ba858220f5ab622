"""The terminal client's parts: its SSE parser, its reconnecting follower, targets, displays."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
from collections.abc import Callable
from pathlib import Path

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from httpx_sse import EventSource
from rich.console import Console

from research_service.client.api import BUSY_ATTEMPTS, ServiceClient, authorization
from research_service.client.events import RunEvent
from research_service.client.follow import Follower
from research_service.client.lines import LineReader
from research_service.client.live import LiveDisplay
from research_service.client.plain import PlainText
from research_service.client.review import Reviewer, ReviewInput, parse_choice, split_queries
from research_service.client.session import parse_target
from research_service.client.sse import Message, SSEParser
from research_service.errors import ClientError, NotAnEventStream, RunRefused, ServiceUnreachable
from research_service.recording import load_recording
from tests.conftest import MakeService, Service

RECORDING = Path(__file__).parent / "recordings" / "builtin_completed.jsonl"


def parse_in_chunks(raw: bytes, sizes: Callable[[], int]) -> list[Message]:
    parser, out, at = SSEParser(), [], 0
    while at < len(raw):
        size = sizes()
        out += parser.feed(raw[at : at + size])
        at += size
    return out


# --- the SSE parser ------------------------------------------------------------------------


def test_parser_follows_the_spec_for_line_ends_fields_and_dispatch() -> None:
    raw = (
        "\ufeff: a comment\r\n"
        "retry: 250\r\n\r\n"
        "data: first\rdata:second\r\rid: r:1\nevent: phase\ndata:  two spaces\n\n"
        "id: bad\0id\ndata: x\n\n"
        "event: nothing\n\n"
        "data: never dispatched"
    ).encode()
    for sizes in (lambda: 1, lambda: 2, lambda: 7, lambda: len(raw)):
        messages = parse_in_chunks(raw, sizes)
        assert messages == [
            Message("message", "first\nsecond", ""),
            Message("phase", " two spaces", "r:1"),
            Message("message", "x", "r:1"),  # an id with NUL is ignored: the last one stays
        ]
    parser = SSEParser()
    parser.feed(raw)
    assert parser.retry == 250


def test_parser_keeps_a_character_split_across_chunks() -> None:
    raw = 'data: {"text":"naïve 😀"}\n\n'.encode()
    assert parse_in_chunks(raw, lambda: 1) == [Message("message", '{"text":"naïve 😀"}', "")]


async def test_parser_agrees_with_httpx_sse_on_a_real_stream(
    service: Service, client: httpx.AsyncClient
) -> None:
    """A whole run's bytes, cut at random places, parse as an independent client parses them."""
    service.llm.pieces = ["multi\nline ", "naïve\u2028 ", 'quo"te ', "end [1]."]
    run_id = await service.create(client)
    await service.wait_done(run_id)
    raw = (await client.get(service.url(f"/v1/runs/{run_id}/events"))).content
    reference = httpx.Response(200, headers={"content-type": "text/event-stream"}, content=raw)
    # httpx-sse also yields the `retry:` block, which the spec (and a browser) never dispatches.
    expected = [(e.event, e.data, e.id) for e in EventSource(reference).iter_sse() if e.data]
    rng = random.Random(7)
    for _ in range(5):
        got = parse_in_chunks(raw, lambda: rng.randint(1, 40))
        assert [(m.event, m.data, m.id) for m in got] == expected
    assert expected[-1][0] == "done"


# --- listen's targets ------------------------------------------------------------------------

RUN = "0123456789abcdef"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (RUN, ("http://server:1", RUN)),
        (f"http://h:8080/v1/runs/{RUN}/events", ("http://h:8080", RUN)),
        (f"https://h/research/v1/runs/{RUN}", ("https://h/research", RUN)),
        (f"http://h:8080/?run={RUN}", ("http://h:8080", RUN)),
        (f"http://h:8080/panel/?run={RUN}", ("http://h:8080/panel", RUN)),
    ],
)
def test_listen_takes_a_run_id_an_api_url_or_a_panel_link(
    target: str, expected: tuple[str, str]
) -> None:
    assert parse_target(target, "http://server:1") == expected


@pytest.mark.parametrize("target", ["abc", "http://h/v1/runs/xyz", "ftp://h/?run=" + RUN, ""])
def test_other_targets_are_refused_with_examples(target: str) -> None:
    with pytest.raises(ClientError, match="neither a run id"):
        parse_target(target, "http://server:1")


# --- the follower against a scripted server ---------------------------------------------------


def frame(seq: int, name: str = "token", data: object = None) -> bytes:
    body = json.dumps(data if data is not None else {"text": f"t{seq} "})
    return f"id: {RUN}:{seq}\nevent: {name}\ndata: {body}\n\n".encode()


Answer = Callable[[web.Request], web.StreamResponse | list[bytes]]


class Script:
    """A server whose answer to the n-th stream request is scripted by the test."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.headers: list[str | None] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(request.headers.get("Last-Event-ID"))
        answer = self.answers[min(len(self.headers), len(self.answers)) - 1]
        result = answer(request)
        if isinstance(result, web.StreamResponse):
            return result
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in result:
            await response.write(chunk)
        return response


async def follow_all(url: str, *, give_up_after_s: float = 5.0) -> tuple[list[RunEvent], list[str]]:
    notes: list[str] = []
    async with aiohttp.ClientSession() as session:
        follower = Follower(session, url, notify=notes.append, give_up_after_s=give_up_after_s)
        return [event async for event in follower.events()], notes


async def _served(script: Script) -> tuple[TestServer, str]:
    app = web.Application()
    app.router.add_get("/events", script.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, str(server.make_url("/events"))


async def test_follower_never_delivers_an_event_twice_even_from_a_server_that_repeats() -> None:
    """A server that ignores Last-Event-ID and replays from 1 still yields each seq once."""
    script = Script(
        lambda _: [b"retry: 5\n\n", frame(1), frame(2), frame(3)],  # then closes: no done
        lambda _: [frame(n) for n in (1, 2, 3, 4)] + [frame(5, "done", {"status": "completed"})],
    )
    server, url = await _served(script)
    try:
        events, notes = await follow_all(url)
    finally:
        await server.close()
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert script.headers == [None, f"{RUN}:3"]
    assert len(notes) == 1
    assert "ended the stream before the run's done event" in notes[0]
    assert f"after event {RUN}:3" in notes[0]


async def test_follower_retries_a_503_then_gives_up_saying_so() -> None:
    script = Script(
        lambda _: [b"retry: 1\n\n", frame(1)],
        lambda _: web.Response(status=503, text="overloaded"),
    )
    server, url = await _served(script)
    try:
        with pytest.raises(ServiceUnreachable, match=r"gave up after 0\.2 s"):
            await follow_all(url, give_up_after_s=0.2)
    finally:
        await server.close()
    assert len(script.headers) >= 3
    assert set(script.headers[1:]) == {f"{RUN}:1"}


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        (
            lambda _: web.json_response({"detail": "no run with id 'x'"}, status=404),
            RunRefused,
            "no run with id",
        ),
        (lambda _: web.Response(text="<html>"), NotAnEventStream, "not text/event-stream"),
        (
            lambda _: web.Response(status=404, text="<h1>Not Found</h1>", content_type="text/html"),
            NotAnEventStream,
            "HTTP 404 <h1>Not Found</h1>, which is not a research-service's answer",
        ),
        (lambda _: [b"id: 7\nevent: token\ndata: {}\n\n"], NotAnEventStream, "never sends"),
    ],
)
async def test_follower_stops_at_once_on_answers_a_retry_cannot_mend(
    answer: Answer, error: type[Exception], match: str
) -> None:
    script = Script(answer)
    server, url = await _served(script)
    try:
        with pytest.raises(error, match=match):
            await follow_all(url)
    finally:
        await server.close()
    assert len(script.headers) == 1


async def test_follower_gives_up_when_its_time_is_up_not_a_backoff_later() -> None:
    """The stream asks for 5 s between reconnects; with 1 s to give up, the last try is at 1 s."""
    script = Script(
        lambda _: [b"retry: 5000\n\n", frame(1)],
        lambda _: web.Response(status=503, text="overloaded"),
    )
    server, url = await _served(script)
    notes: list[str] = []
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession() as session:
            follower = Follower(session, url, notify=notes.append, give_up_after_s=1.0)
            started = loop.time()
            with pytest.raises(ServiceUnreachable, match=r"gave up after 1 s"):
                async for _ in follower.events():
                    pass
            took = loop.time() - started
    finally:
        await server.close()
    assert took < 2.5  # it took 4.5 to 5.5 s when the whole 5 s backoff was slept first
    assert "reconnecting in 1.0 s" in notes[0]
    assert len(script.headers) == 2


async def test_a_retry_of_0_still_backs_off_doubling_and_gives_up_in_time() -> None:
    """A `retry: 0` (a proxy's, or `--retry-ms 0`) once made every wait 0 s: a thousand
    reconnects in a fraction of a second, then an OverflowError. The waits start at 0.1 s
    and double."""
    script = Script(
        lambda _: [b"retry: 0\n\n", frame(1)],
        lambda _: web.Response(status=503, text="overloaded"),
    )
    server, url = await _served(script)
    notes: list[str] = []
    try:
        async with aiohttp.ClientSession() as session:
            follower = Follower(session, url, notify=notes.append, give_up_after_s=1.0)
            with pytest.raises(ServiceUnreachable, match=r"gave up after 1 s"):
                async for _ in follower.events():
                    pass
    finally:
        await server.close()
    waits = [float(re.findall(r"reconnecting in ([0-9.]+) s", note)[0]) for note in notes]
    # 0.1, 0.2, 0.4, then what is left of the second: four or five tries in all.
    assert 3 <= len(waits) <= 5, notes
    assert waits[:3] == [0.1, 0.2, 0.4], notes
    assert len(script.headers) == len(waits) + 1


async def test_follower_reports_a_service_that_is_not_there(unused_tcp_port: int) -> None:
    with pytest.raises(ServiceUnreachable, match="is the service running"):
        await follow_all(f"http://127.0.0.1:{unused_tcp_port}/events")


# --- the JSON endpoints: a busy service, a server that is not one --------------------------


async def test_a_busy_service_is_asked_again_then_refused_saying_so(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    """429 with Retry-After: each wait is said; after the last attempt it is a refusal (2)."""
    service = await make_service(max_active_runs=1)
    service.llm.hold_after = 1
    await service.create(client)
    await service.until_held()
    notes: list[str] = []
    async with aiohttp.ClientSession() as session:
        api = ServiceClient(session, service.url("/"), notify=notes.append, max_busy_wait_s=0.01)
        with pytest.raises(RunRefused, match="still busy after 4 attempts") as caught:
            await api.create("Another question?", {})
    service.llm.release.set()
    assert caught.value.status == 429
    assert caught.value.exit_code == 2
    assert notes == [
        "the service is busy (1 run is active, the limit is 1; retry in 5 s); trying again "
        f"in 0.01 s (attempt {n} of {BUSY_ATTEMPTS})"
        for n in range(2, BUSY_ATTEMPTS + 1)
    ]


@pytest.mark.parametrize(
    ("status", "body", "content_type", "says"),
    [
        (404, b"404: Not Found", "text/plain", "answered HTTP 404 404: Not Found, which is not"),
        (200, b'{"status": "ok"}', "application/json", "without a run's id, question, events_url"),
        (200, b"<html></html>", "text/html", "not a research-service's JSON"),
    ],
)
async def test_a_server_that_is_not_a_research_service_is_not_a_refusal(
    status: int, body: bytes, content_type: str, says: str
) -> None:
    async def answer(_: web.Request) -> web.Response:
        return web.Response(status=status, body=body, content_type=content_type)

    app = web.Application()
    app.router.add_get("/v1/runs/{id}", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            api = ServiceClient(session, str(server.make_url("/")))
            with pytest.raises(NotAnEventStream, match=says) as caught:
                await api.snapshot("0123456789abcdef")
    finally:
        await server.close()
    assert caught.value.exit_code == 4


# --- the rich display --------------------------------------------------------------------------


async def test_live_display_draws_the_run_and_prints_a_linked_report() -> None:
    recording = load_recording(RECORDING)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, height=30, color_system="standard")
    display = LiveDisplay(console)
    display.start(run_id=recording.run_id, question=recording.question)
    frames: list[str] = []
    for recorded in recording.events:
        event = RunEvent(
            f"{recording.run_id}:{recorded.seq}",
            recording.run_id,
            recorded.seq,
            recorded.event,
            recorded.data,
        )
        display.event(event)
        if event.name == "phase" and event.data.get("query"):
            frame_console = Console(width=100, height=30, record=True, file=io.StringIO())
            frame_console.print(display.frame())
            frames.append(frame_console.export_text())
    display.finish()
    assert "Searching" in frames[0]
    assert "1/3 queries, round 1" in frames[0]
    assert "✓ Planning" in frames[0]
    text = out.getvalue()
    done = recording.events[-1].data
    plain = Console(width=100, record=True, file=io.StringIO())
    plain.print(display.report())
    report = plain.export_text()
    assert "✓ Planning" in report
    assert "✓ Synthesizing" in report
    assert done["answer"][:40] in report
    assert "completed in" in report
    for source in done["sources"]:
        assert f"[{source['id']}] {source['title']}" in report
        assert source["url"] in text
    assert "\x1b]8;id=" in text  # terminal hyperlinks


# --- plan review -------------------------------------------------------------------------------

REVIEW = {
    "phase": "planning",
    "status": "review",
    "elapsed_ms": 5,
    "queries": ["alpha", "beta"],
    "round": 1,
    "review_url": "/v1/runs/0123456789abcdef/plan",
    "expires_in_s": 900,
    "feedback_allowed": True,
}


def review_events(*datas: dict[str, object]) -> list[RunEvent]:
    run = "0123456789abcdef"
    return [RunEvent(f"{run}:{n}", run, n, "phase", dict(d)) for n, d in enumerate(datas, 1)]


def test_review_answers_parse_as_approve_edit_or_feedback() -> None:
    assert parse_choice("") == ("approve", "")
    assert parse_choice(" A ") == ("approve", "")
    assert parse_choice("e one | two ") == ("edit", "one | two")
    assert parse_choice("feedback more on 1991") == ("feedback", "more on 1991")
    assert parse_choice("perhaps") == (None, "perhaps")
    assert split_queries(" one |  | two|") == ["one", "two"]


def test_plain_transcript_shows_each_review_round_and_decision() -> None:
    out = io.StringIO()
    display = PlainText(out)
    display.start(run_id="0123456789abcdef", question="Q?")
    for event in review_events(
        {"phase": "planning", "status": "started", "elapsed_ms": 0},
        REVIEW,
        {
            "phase": "planning",
            "status": "reviewed",
            "round": 1,
            "decision": "feedback",
            "feedback": "more on 1991",
            "elapsed_ms": 9,
        },
        REVIEW | {"round": 2, "queries": ["gamma"]},
        {
            "phase": "planning",
            "status": "reviewed",
            "round": 2,
            "decision": "edited",
            "queries": ["delta", "epsilon"],
            "elapsed_ms": 12,
        },
        {
            "phase": "planning",
            "status": "completed",
            "elapsed_ms": 12,
            "queries": ["delta", "epsilon"],
            "review": "edited",
        },
    ):
        display.event(event)
    assert out.getvalue().splitlines()[1:] == [
        "[planning] started",
        "[planning] plan for review, round 1: 1. alpha | 2. beta",
        "[planning] round 1 reviewed: feedback: more on 1991",
        "[planning] plan for review, round 2: 1. gamma",
        "[planning] round 2 reviewed: edited: delta | epsilon",
        "[planning] 2 queries: delta | epsilon",
        "[planning] the plan was edited by its reviewer",
    ]


async def test_live_display_shows_the_plan_that_waits_and_pauses_for_typing() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, height=30)
    display = LiveDisplay(console)
    display.start(run_id="0123456789abcdef", question="Q?")
    for event in review_events({"phase": "planning", "status": "started", "elapsed_ms": 0}, REVIEW):
        display.event(event)
    frame_console = Console(width=100, height=30, record=True, file=io.StringIO())
    frame_console.print(display.frame())
    frame = frame_console.export_text()
    assert "waiting for review, round 1" in frame
    assert "  1. alpha\n  2. beta\n" in frame
    assert "research-service plan 0123456789abcdef --approve" in frame
    display.pause()
    written = len(out.getvalue())
    await asyncio.sleep(0.15)  # a frame's time: nothing is drawn while paused
    assert len(out.getvalue()) == written
    display.resume()
    display.finish()
    assert "stopped listening before the run ended" in out.getvalue()


class PlanStandIn:
    """`POST /v1/runs/{id}/plan` answering each request with the next scripted status."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.bodies: list[object] = []

    async def decide(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        status = self.statuses.pop(0)
        if status == 202:
            return web.json_response({"decision": "approved", "round": 1}, status=202)
        detail = {400: "queries[0] is blank", 409: "the run is not waiting for a review"}[status]
        return web.json_response(
            {"status": status, "detail": detail},
            status=status,
            content_type="application/problem+json",
        )


async def review_with(stand_in: PlanStandIn, typed: bytes) -> str:
    """Type `typed` into a Reviewer facing `stand_in`; what it wrote to its person."""
    app = web.Application()
    app.router.add_post("/v1/runs/{run_id}/plan", stand_in.decide)
    server = TestServer(app)
    await server.start_server()
    read_end, write_end = os.pipe()
    os.write(write_end, typed)
    os.close(write_end)
    out = io.StringIO()
    try:
        async with aiohttp.ClientSession() as session:
            api = ServiceClient(session, str(server.make_url("/")))
            reviewer = Reviewer(
                api=api,
                run_id="0123456789abcdef",
                review=ReviewInput(LineReader(read_end), out),
                display=PlainText(io.StringIO()),
                notify=lambda message: out.write(f"notice: {message}\n"),
            )
            reviewer.event(review_events(REVIEW)[0])
            assert reviewer._task is not None
            await asyncio.wait_for(reviewer._task, 10)
    finally:
        os.close(read_end)
        await server.close()
    return out.getvalue()


async def test_reviewer_asks_again_after_a_400_and_stops_at_a_409() -> None:
    stand_in = PlanStandIn(400, 409)
    said = await review_with(stand_in, b"e   x  \nf more on 1991\na\n")
    # Each names the round it was shown.
    assert stand_in.bodies == [
        {"queries": ["x"], "round": 1},
        {"feedback": "more on 1991", "round": 1},
    ]
    assert "not sent: queries[0] is blank\n" in said
    assert "not sent (decided elsewhere first, or over): the run is not waiting" in said
    assert "sent: " not in said.replace("not sent", "")


async def test_reviewer_without_answers_says_how_to_decide_elsewhere() -> None:
    said = await review_with(PlanStandIn(), b"")
    assert "no answer can be read here; decide from another shell: research-service plan " in said


async def test_input_that_never_ends_a_line_is_taken_as_ended() -> None:
    """`ask --review < /dev/zero` once spun a core, its buffer growing, deaf to SIGTERM."""
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        reader = LineReader(fd)
        async with asyncio.timeout(10):
            assert await reader.readline() is None
        assert reader.at_eof
    finally:
        os.close(fd)


@pytest.mark.parametrize("key", ["rsk_a\x7fb", "key\r\nX-Evil: 1", "kéy", "two words"])
def test_a_key_no_header_can_carry_is_refused_as_a_wrong_key(key: str) -> None:
    """An MCP caller's bearer key of a control character once failed deep in the HTTP client
    (code 0, "Error executing tool", a traceback): it is a wrong key, said as one."""
    with pytest.raises(RunRefused) as caught:
        authorization(key)
    assert caught.value.status == 401
    assert "refused the API key" in str(caught.value)
    assert authorization("rsk_0123456789ab_" + "K" * 43) == {
        "Authorization": "Bearer rsk_0123456789ab_" + "K" * 43
    }
