"""Provider cassettes: a taped run plays back to the same answer; an untaped request says so."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestServer

from research_service.app import create_app
from research_service.errors import ConfigError
from research_service.providers.cassettes import CASSETTE_FILE
from research_service.settings import Settings
from tests.loopback import refused_port
from tests.sse import Received, listen

QUESTION = "How do I brew green tea?"
OTHER_QUESTION = "How do I repair a bicycle puncture?"

Ask = Callable[[Settings, str], Awaitable[Received]]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "tea.md").write_text(
        "# Brewing green tea\n\n"
        "Green tea is brewed with water at about 80 degrees for two to three minutes. "
        "Boiling water makes green tea bitter, so let the kettle cool first.\n"
    )
    (folder / "coffee.md").write_text(
        "# Brewing coffee\n\n"
        "Filter coffee is brewed with water just off the boil for about four minutes. "
        "A medium grind suits most filter coffee brewers.\n"
    )
    return folder


@pytest.fixture
async def ask() -> AsyncIterator[Ask]:
    """Serve an app with the given settings and return the stream of one run of `question`."""
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10.0))

        async def run(settings: Settings, question: str) -> Received:
            server = TestServer(create_app(settings), host="127.0.0.1")
            await server.start_server()
            stack.push_async_callback(server.close)
            created = await http.post(str(server.make_url("/v1/runs")), json={"question": question})
            assert created.status_code == 201, created.text
            run_id = created.json()["id"]
            return await listen(http, str(server.make_url(f"/v1/runs/{run_id}/events")))

        yield run


def _taping(tmp_path: Path, corpus: Path, cassettes: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", corpus=corpus, token_delay_ms=0, record_providers=cassettes
    )


def _playing_back(tmp_path: Path, cassettes: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "replay-data", llm="replay", search="replay", cassettes=cassettes
    )


def _done(received: Received) -> dict[str, Any]:
    name, data = received.last
    assert name == "done", received.names
    result: dict[str, Any] = data
    return result


async def test_a_taped_run_plays_back_to_the_same_answer_and_sources(
    tmp_path: Path, corpus: Path, ask: Ask
) -> None:
    cassettes = tmp_path / "cassettes"
    taped = _done(await ask(_taping(tmp_path, corpus, cassettes), QUESTION))
    assert taped["status"] == "completed", taped
    assert taped["sources"], "the tiny corpus should answer the question"

    kinds = {
        json.loads(line)["kind"] for line in (cassettes / CASSETTE_FILE).read_text().splitlines()
    }
    assert {"plan", "search", "synthesize"} <= kinds

    played = await ask(_playing_back(tmp_path, cassettes), QUESTION)
    done = _done(played)
    assert done["status"] == "completed", done
    assert done["answer"] == taped["answer"]
    assert done["sources"] == taped["sources"]
    assert played.text() == taped["answer"]


async def test_an_untaped_request_fails_the_run_naming_the_request(
    tmp_path: Path, corpus: Path, ask: Ask
) -> None:
    cassettes = tmp_path / "cassettes"
    await ask(_taping(tmp_path, corpus, cassettes), QUESTION)

    played = await ask(_playing_back(tmp_path, cassettes), OTHER_QUESTION)
    errors = [played.data(i) for i, name in enumerate(played.names) if name == "error"]
    assert errors, played.names
    message = json.dumps(errors[0])
    assert f"no recorded answer for plan({OTHER_QUESTION!r}" in message
    assert f"record it with --record-providers {cassettes}" in message
    assert _done(played)["status"] == "failed"


async def test_a_missing_cassette_folder_is_a_config_error_at_start_up(tmp_path: Path) -> None:
    app = create_app(_playing_back(tmp_path, tmp_path / "nowhere"))
    server = TestServer(app, host="127.0.0.1")
    with pytest.raises(ConfigError, match="record one with --record-providers"):
        await server.start_server()
    await server.close()


@pytest.mark.parametrize("make", ["a file", "a folder whose tape is a folder"])
async def test_a_taping_folder_that_cannot_be_written_is_a_config_error_at_start_up(
    tmp_path: Path, corpus: Path, make: str
) -> None:
    """It once started, and then failed every run with a traceback."""
    cassettes = tmp_path / "cassettes"
    if make == "a file":
        cassettes.write_text("not a folder\n")
    else:
        (cassettes / CASSETTE_FILE).mkdir(parents=True)
    app = create_app(_taping(tmp_path, corpus, cassettes))
    server = TestServer(app, host="127.0.0.1")
    try:
        with pytest.raises(ConfigError, match="give --record-providers a folder the service"):
            await server.start_server()
    finally:
        await server.close()


async def test_a_tape_that_cannot_be_written_mid_run_fails_no_run(
    tmp_path: Path, corpus: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The tape's file turns into a folder once the service has started (a write fails, as on
    a full disk): the run still answers, and the log says what was not taped."""
    cassettes = tmp_path / "cassettes"
    server = TestServer(create_app(_taping(tmp_path, corpus, cassettes)), host="127.0.0.1")
    await server.start_server()
    try:
        (cassettes / CASSETTE_FILE).mkdir(parents=True)
        async with httpx.AsyncClient(timeout=10.0) as http:
            created = await http.post(str(server.make_url("/v1/runs")), json={"question": QUESTION})
            events_url = str(server.make_url(created.json()["events_url"]))
            with caplog.at_level(logging.WARNING, logger="research_service.providers.cassettes"):
                received = await listen(http, events_url)
    finally:
        await server.close()
    assert _done(received)["status"] == "completed"
    assert any("could not tape a" in r.getMessage() for r in caplog.records)


async def _reviewed(settings: Settings, question: str, feedback: str) -> Received:
    """One run with review_plan: re-planned once with `feedback`, then approved."""
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        async with httpx.AsyncClient(timeout=10.0) as http:
            body = {"question": question, "options": {"review_plan": True}}
            created = (await http.post(str(server.make_url("/v1/runs")), json=body)).json()
            url = str(server.make_url(created["events_url"]))
            plan = str(server.make_url(f"/v1/runs/{created['id']}/plan"))

            def at_round(number: int) -> Callable[[Any], bool]:
                return lambda sse: (
                    sse.event == "phase"
                    and (
                        '"status":"review","elapsed_ms"' in sse.data
                        and f'"round":{number}' in sse.data
                    )
                )

            head = await listen(http, url, stop=at_round(1))
            assert (await http.post(plan, json={"feedback": feedback})).status_code == 202
            middle = await listen(http, url, last_event_id=head.ids[-1], stop=at_round(2))
            assert (await http.post(plan, json={})).status_code == 202
            rest = await listen(http, url, last_event_id=middle.ids[-1])
            return Received(200, rest.headers, head.events + middle.events + rest.events)
    finally:
        await server.close()


async def test_a_reviewed_run_plays_back_the_same_with_the_same_decisions(
    tmp_path: Path, corpus: Path
) -> None:
    cassettes = tmp_path / "cassettes"
    feedback = "water temperature for green tea"
    taped = await _reviewed(_taping(tmp_path, corpus, cassettes), QUESTION, feedback)
    lines = [json.loads(line) for line in (cassettes / CASSETTE_FILE).read_text().splitlines()]
    replans = [line for line in lines if line["kind"] == "plan" and "feedback" in line["request"]]
    assert len(replans) == 1
    assert replans[0]["request"]["feedback"] == feedback
    played = await _reviewed(_playing_back(tmp_path, cassettes), QUESTION, feedback)

    def without_clock(received: Received) -> list[tuple[str, Any]]:
        shown = []
        for event in received.events:
            data = json.loads(event.data)
            if isinstance(data, dict):
                # The clock, the run's id, and page reading (a replay reads no web pages).
                for varies in ("elapsed_ms", "timings_ms", "review_url", "expires_at", "pages"):
                    data.pop(varies, None)
            shown.append((event.event, data))
        return shown

    assert without_clock(played) == without_clock(taped)
    assert _done(played)["status"] == "completed"


async def test_a_cassette_taped_from_a_local_corpus_reads_no_page_on_playback(
    tmp_path: Path, corpus: Path, ask: Ask
) -> None:
    """Its hits' links may be web pages (the stdlib's are): reading them would bring the web
    into a playback, and passages the taped answer was not written from."""
    cassettes = tmp_path / "cassettes"
    await ask(_taping(tmp_path, corpus, cassettes), QUESTION)
    tape = cassettes / CASSETTE_FILE
    lines = [json.loads(line) for line in tape.read_text().splitlines()]
    assert {line["provider"] for line in lines if line["kind"] == "search"} == {"local"}
    web_page = f"http://127.0.0.1:{refused_port()}/tea.html"
    for line in lines:
        if line["kind"] == "search":
            for hit in line["response"]:
                hit["url"] = web_page
    tape.write_text("".join(json.dumps(line) + "\n" for line in lines))

    played = await ask(_playing_back(tmp_path, cassettes), QUESTION)
    assert not _pages_read(played)

    # Taped from web search, a playback reads the pages as the taped run did.
    for line in lines:
        line["provider"] = "searxng"
    tape.write_text("".join(json.dumps(line) + "\n" for line in lines))
    played = await ask(_playing_back(tmp_path / "again", cassettes), QUESTION)
    assert _pages_read(played)


def _pages_read(received: Received) -> list[Any]:
    """The `page` of each page-reading progress event the stream had."""
    return [
        received.data(i)["page"]
        for i, name in enumerate(received.names)
        if name == "phase" and "page" in received.data(i)
    ]


async def test_a_cassette_of_local_and_web_searches_at_once_stops_the_start(
    tmp_path: Path,
) -> None:
    """Pages are read for every hit or none: one web line made a playback read the pages of
    every local one, and miss its taped answers."""
    cassettes = tmp_path / "cassettes"
    cassettes.mkdir()
    hit = [{"title": "t", "url": "https://example.org/t", "snippet": "s", "score": 1.0}]
    lines = [
        json.dumps({"kind": "search", "key": k, "request": {}, "response": hit, "provider": p})
        for k, p in (("a", "local"), ("b", "searxng"))
    ]
    (cassettes / CASSETTE_FILE).write_text("\n".join(lines) + "\n")
    server = TestServer(create_app(_playing_back(tmp_path, cassettes)), host="127.0.0.1")
    with pytest.raises(ConfigError, match="from a local corpus and from web search"):
        await server.start_server()


def _exchange(kind: str, response: Any) -> str:
    return json.dumps({"kind": kind, "key": "k", "request": {}, "response": response}) + "\n"


USAGE = [[10, 2, False]]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (_exchange("plan", {"queries": ["tea"], "fallback": None}), "usage is not a list"),
        (_exchange("plan", {"queries": [1], "fallback": None, "usage": USAGE}), "queries is not"),
        (_exchange("synthesize", {"pieces": "abc", "usage": USAGE}), "pieces is not a list"),
        (_exchange("synthesize", {"pieces": ["a"], "usage": [[-5, 2, False]]}), "usage holds"),
        (_exchange("search", [{"title": "t", "url": "u", "snippet": "s", "extra": 1}]), "a hit"),
        (_exchange("search", {"title": "t"}), "not a list of hits"),
        (_exchange("search", [{"title": "t", "url": "u", "snippet": "s", "score": "9"}]), "score"),
        (_exchange("answer", {}), "kind 'answer' is none of"),
        ('{"kind": "plan", "key": "k", "response": {"queries": [], "usage": [[NaN, 1, false]]}}\n',
         "NaN is not a JSON number"),
    ],
)  # fmt: skip
async def test_a_cassette_line_of_the_wrong_shape_stops_the_start_naming_it(
    tmp_path: Path, line: str, says: str
) -> None:
    """Once, such lines loaded and then failed runs with Python's own words (`KeyError`)."""
    cassettes = tmp_path / "cassettes"
    cassettes.mkdir()
    good = _exchange("synthesize", {"pieces": ["Tea."], "usage": USAGE})
    (cassettes / CASSETTE_FILE).write_text(good + line)
    server = TestServer(create_app(_playing_back(tmp_path, cassettes)), host="127.0.0.1")
    with pytest.raises(ConfigError) as caught:
        await server.start_server()
    message = str(caught.value)
    assert f"{cassettes / CASSETTE_FILE} line 2 is not a cassette exchange" in message
    assert says in message
