"""The searxng provider against a wire-level fake SearXNG on a loopback port."""

from __future__ import annotations

import json
import logging
from base64 import b64encode
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from research_service.app import create_app
from research_service.errors import ConfigError, SearchError
from research_service.providers.registry import search_provider
from research_service.providers.search_retry import (
    HTTPStatusFailure,
    retry_wait_s,
    should_retry,
)
from research_service.providers.searxng import (
    JSON_REFUSED,
    MAX_RESULTS_READ,
    SearxngSearch,
    client_timeout,
)
from research_service.settings import Settings
from tests.fake_searxng import FakeSearxng, Hold, Result, Status
from tests.fakes import ScriptedLLM
from tests.loopback import LoopbackServer, refused_port
from tests.sse import listen

TINY_WAIT_S = 0.01


@pytest.fixture
async def searx() -> AsyncIterator[FakeSearxng]:
    async with FakeSearxng() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=client_timeout(5.0)) as client:
        yield client


def provider(session: aiohttp.ClientSession, base_url: str, **options: Any) -> SearxngSearch:
    options.setdefault("max_wait_s", TINY_WAIT_S)
    return SearxngSearch(session, base_url=base_url, **options)


# --- results -----------------------------------------------------------------------------


async def test_results_become_hits_best_score_first(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    searx.script(
        "tcp slow start",
        [
            Result(url="https://a.example/1", title="A", content="about  A\n", score=0.5),
            Result(url="https://b.example/2", title="B", content="about B", score=3.0),
            Result(url="magnet:?xt=urn:btih:abc", title="torrent", score=9.0),
            Result(url="https://c.example/3", title="", content="", score=0.5),
        ],
    )
    hits = await provider(session, searx.url).search("tcp slow start", limit=10)
    assert [(h.title, h.url, h.snippet, h.score) for h in hits] == [
        ("B", "https://b.example/2", "about B", 3.0),
        ("A", "https://a.example/1", "about A", 0.5),  # equal scores keep SearXNG's order
        ("https://c.example/3", "https://c.example/3", "", 0.5),  # no title: its URL
    ]


class RawSearxng(LoopbackServer):
    """Answers every `/search` with `body` as JSON, as a broken or hostile instance may."""

    def __init__(self, body: bytes, *, status: int = 200) -> None:
        super().__init__()
        self.body, self.status = body, status

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/search", self.answer)
        return app

    async def answer(self, request: web.Request) -> web.Response:
        return web.Response(body=self.body, status=self.status, content_type="application/json")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def test_results_whose_url_does_not_parse_are_dropped(
    session: aiohttp.ClientSession,
) -> None:
    """One such result once failed the whole run `internal` (urlsplit's ValueError)."""
    urls = ["http://[::1", "http://a]b/", "http://ex\u2100ample.com/", "https://good.example/"]
    body = json.dumps({"results": [{"url": url, "title": "t", "score": 1} for url in urls]})
    server = RawSearxng(body.encode())
    await server.start()
    try:
        hits = await provider(session, server.url).search("q", limit=10)
    finally:
        await server.close()
    assert [h.url for h in hits] == ["https://good.example/"]


@pytest.mark.parametrize("status", [200, 400])
async def test_a_reply_nested_too_deep_to_read_is_no_searxng_json(
    session: aiohttp.ClientSession, status: int
) -> None:
    """It once failed the run `internal` (a RecursionError), and `serve` at its check."""
    server = RawSearxng(b"[" * 5000 + b"]" * 5000, status=status)
    await server.start()
    try:
        searx = provider(session, server.url, attempts=1)
        with pytest.raises(ConfigError, match="not with SearXNG's JSON"):
            await searx.check()
        if status == 200:
            with pytest.raises(SearchError, match="not with SearXNG's JSON results"):
                await searx.search("q", limit=3)
    finally:
        await server.close()


async def test_only_the_first_results_of_a_reply_are_read(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    """A reply of millions of entries (within the size cap) was sorted whole on the event
    loop, for seconds: only the first MAX_RESULTS_READ, in SearXNG's order, are looked at."""
    results = [
        Result(url=f"https://r{n}.example/", title="r", score=1.0) for n in range(MAX_RESULTS_READ)
    ]
    results.append(Result(url="https://beyond.example/", title="b", score=99.0))
    searx.script("q", results)
    hits = await provider(session, searx.url).search("q", limit=3)
    assert [h.url for h in hits] == [f"https://r{n}.example/" for n in range(3)]


async def test_sends_query_format_page_and_configured_options(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    search = provider(
        session,
        searx.url + "/",
        engines=["duckduckgo", "wikipedia"],
        language="de",
        time_range="month",
    )
    await search.search("paris", limit=5)
    (sent,) = searx.searches
    assert sent.path == "/search"
    assert sent.params == {
        "q": "paris",
        "format": "json",
        "pageno": "1",
        "engines": "duckduckgo,wikipedia",
        "language": "de",
        "time_range": "month",
    }


async def test_unset_options_are_left_to_the_instance(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    await provider(session, searx.url).search("paris", limit=5)
    assert searx.searches[0].params == {"q": "paris", "format": "json", "pageno": "1"}


async def test_settings_configure_engines_language_time_range_and_attempts(
    session: aiohttp.ClientSession,
) -> None:
    settings = Settings(
        searxng_url="http://searx.internal:8080/",
        searxng_engines=" duckduckgo, ,wikipedia ",
        searxng_language="fr",
        searxng_time_range="year",
        search_attempts=5,
    )
    search = SearxngSearch.from_settings(session, settings)
    assert search.endpoint == "http://searx.internal:8080/search"
    assert search.params("q")["engines"] == "duckduckgo,wikipedia"
    assert (search.language, search.time_range, search.attempts) == ("fr", "year", 5)


async def test_duplicates_by_canonical_url_are_kept_once_at_their_best_rank(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    searx.script(
        "q",
        [
            Result(url="https://Example.com/page/?utm_source=feed", title="low", score=1.0),
            Result(url="https://example.com/page#intro", title="high", score=2.0),
            Result(url="https://example.com:443/page", title="dup", score=0.5),
            Result(url="https://example.com/other", title="other", score=0.1),
        ],
    )
    hits = await provider(session, searx.url).search("q", limit=10)
    assert [(h.title, h.url) for h in hits] == [
        ("high", "https://example.com/page#intro"),  # the URL as SearXNG gave it
        ("other", "https://example.com/other"),
    ]


async def test_at_most_limit_hits(searx: FakeSearxng, session: aiohttp.ClientSession) -> None:
    searx.script(
        "q", [Result(url=f"https://e.example/{n}", title=str(n), score=10 - n) for n in range(8)]
    )
    hits = await provider(session, searx.url).search("q", limit=3)
    assert [h.title for h in hits] == ["0", "1", "2"]
    assert await provider(session, searx.url).search("q", limit=0) == []


async def test_no_results_is_an_empty_list(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    assert await provider(session, searx.url).search("nothing matches", limit=5) == []


async def test_some_engines_failing_still_returns_the_others_results(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    searx.script(
        "q", [Result(url="https://a.example/", title="A")], unresponsive=[("google", "CAPTCHA")]
    )
    hits = await provider(session, searx.url).search("q", limit=5)
    assert [h.title for h in hits] == ["A"]


async def test_every_engine_failing_is_a_search_error_naming_them(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    searx.script("q", [], unresponsive=[("google", "CAPTCHA"), ("bing", "timeout")])
    with pytest.raises(SearchError) as caught:
        await provider(session, searx.url).search("q", limit=5)
    assert "google (CAPTCHA), bing (timeout)" in str(caught.value)
    assert "RESEARCH_SEARXNG_ENGINES" in str(caught.value)
    assert len(searx.searches) == 1


# --- faults ------------------------------------------------------------------------------


async def test_rate_limit_is_retried_after_the_wait_asked_for_capped(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    searx.fail(Status(status=429, retry_after="30"))
    searx.script("q", [Result(url="https://a.example/", title="A")])
    hits = await provider(session, searx.url, max_wait_s=0.05).search("q", limit=5)
    assert [h.title for h in hits] == ["A"]
    first, second = searx.searches
    assert 0.05 <= second.arrived - first.arrived < 5  # the cap, not the 30 s asked


async def test_rate_limit_wait_under_the_cap_is_honoured(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    searx.fail(Status(status=429, retry_after="0.2"))
    await provider(session, searx.url, max_wait_s=5.0).search("q", limit=5)
    first, second = searx.searches
    assert second.arrived - first.arrived >= 0.2


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_are_retried(
    searx: FakeSearxng, session: aiohttp.ClientSession, status: int
) -> None:
    searx.fail(Status(status=status), Status(status=status))
    searx.script("q", [Result(url="https://a.example/", title="A")])
    hits = await provider(session, searx.url, attempts=3).search("q", limit=5)
    assert [h.title for h in hits] == ["A"]
    assert len(searx.searches) == 3


async def test_server_errors_on_every_attempt_end_in_a_retryable_search_error(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    searx.fail(*[Status(status=503, retry_after="0")] * 3)
    with pytest.raises(SearchError) as caught:
        await provider(session, searx.url, attempts=3).search("q", limit=5)
    error = caught.value
    assert "HTTP 503" in str(error)
    assert "after 3 attempts" in str(error)
    assert error.retryable
    assert error.retry_after == 0
    assert error.provider == "searxng"
    assert len(searx.searches) == 3


async def test_rate_limit_on_every_attempt_says_how_to_lift_it(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    searx.fail(*[Status(status=429, retry_after="7")] * 2)
    with pytest.raises(SearchError) as caught:
        await provider(session, searx.url, attempts=2).search("q", limit=5)
    assert "server.limiter: false" in str(caught.value)
    assert caught.value.retry_after == 7


async def test_json_disabled_is_a_clear_error_and_not_retried(
    session: aiohttp.ClientSession,
) -> None:
    async with FakeSearxng(formats=("html",)) as searx:
        with pytest.raises(SearchError) as caught:
            await provider(session, searx.url, attempts=3).search("q", limit=5)
        assert len(searx.searches) == 1
    assert str(caught.value) == JSON_REFUSED
    assert "search: formats: [html, json]" in str(caught.value)
    assert not caught.value.retryable


async def test_bad_parameter_is_reported_and_not_retried(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    search = provider(session, searx.url, time_range="fortnight", attempts=3)
    with pytest.raises(SearchError) as caught:
        await search.search("q", limit=5)
    assert 'Invalid value "fortnight" for parameter time_range' in str(caught.value)
    assert len(searx.searches) == 1


async def test_wrong_base_path_says_to_fix_searxng_url(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(SearchError, match="set SEARXNG_URL"):
        await provider(session, searx.url + "/not-searxng", attempts=3).search("q", limit=5)
    assert len(searx.requests) == 0  # aiohttp's own 404, before the search route


async def test_unreachable_instance_is_retried_then_says_to_start_it(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://127.0.0.1:{refused_port()}"
    with caplog.at_level(logging.INFO), pytest.raises(SearchError) as caught:
        await provider(session, url, attempts=2).search("q", limit=5)
    assert "attempt 2 of 2" in caplog.text
    assert str(caught.value) == (
        f"cannot reach SearXNG at {url} (Connection refused) after 2 attempts; "
        "start it or set SEARXNG_URL"
    )
    assert caught.value.retryable


async def test_a_password_in_the_url_is_sent_as_basic_auth_and_never_shown(
    searx: FakeSearxng, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """SearXNG behind basic auth: errors reach run events and the open /readyz."""
    searx.script("json", [Result(url="https://docs.python.org/3/library/json.html", title="json")])
    authed = searx.url.replace("http://", "http://searx:S3cretPass@")
    assert await provider(session, authed).search("json", limit=5)
    assert searx.requests[-1].authorization == "Basic " + b64encode(b"searx:S3cretPass").decode()
    down = f"http://searx:S3cretPass@127.0.0.1:{refused_port()}"
    with caplog.at_level(logging.INFO), pytest.raises(SearchError) as caught:
        await provider(session, down, attempts=1).search("q", limit=5)
    with pytest.raises(ConfigError) as at_start:
        await provider(session, down).check()
    for said in (str(caught.value), str(at_start.value), caplog.text):
        assert "S3cretPass" not in said
    assert f"SearXNG at {down.replace('searx:S3cretPass@', '')} " in str(caught.value)


async def test_slow_answer_times_out_and_is_retried(searx: FakeSearxng) -> None:
    held = Hold()
    searx.fail(held)
    searx.script("q", [Result(url="https://a.example/", title="A")])
    async with aiohttp.ClientSession(timeout=client_timeout(0.3)) as session:
        hits = await provider(session, searx.url, attempts=2).search("q", limit=5)
    assert held.reached.is_set()
    assert [h.title for h in hits] == ["A"]
    assert len(searx.searches) == 2


async def test_slow_answer_on_every_attempt_says_it_timed_out(searx: FakeSearxng) -> None:
    searx.fail(Hold(), Hold())
    async with aiohttp.ClientSession(timeout=client_timeout(0.2)) as session:
        with pytest.raises(SearchError, match="did not answer in time after 2 attempts"):
            await provider(session, searx.url, attempts=2).search("q", limit=5)


def test_retry_policy_retries_transient_failures_only() -> None:
    assert should_retry(HTTPStatusFailure(429))
    assert should_retry(HTTPStatusFailure(408))
    assert should_retry(HTTPStatusFailure(503))
    assert should_retry(TimeoutError())
    assert should_retry(aiohttp.ServerDisconnectedError())
    for status in (400, 401, 403, 404, 422):
        assert not should_retry(HTTPStatusFailure(status))
    assert not should_retry(SearchError("bad body", provider="searxng"))


def test_retry_wait_is_the_servers_ask_capped_or_backoff() -> None:
    assert retry_wait_s(HTTPStatusFailure(429, retry_after=2.0), 1, max_wait_s=5) == 2.0
    assert retry_wait_s(HTTPStatusFailure(429, retry_after=60.0), 1, max_wait_s=5) == 5
    assert retry_wait_s(HTTPStatusFailure(503), 1, max_wait_s=5, jitter=0) == 0.5
    assert retry_wait_s(TimeoutError(), 3, max_wait_s=5, jitter=0) == 2.0


# --- start-up check ----------------------------------------------------------------------


async def test_check_makes_one_request_that_asks_no_engine(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    await provider(session, searx.url).check()
    (sent,) = searx.requests
    assert sent.params == {"format": "json"}  # no q: SearXNG answers 400 without searching


async def test_check_fails_when_json_is_disabled(session: aiohttp.ClientSession) -> None:
    async with FakeSearxng(formats=("html",)) as searx:
        with pytest.raises(ConfigError) as caught:
            await provider(session, searx.url).check()
    assert str(caught.value) == JSON_REFUSED


async def test_check_fails_when_unreachable(session: aiohttp.ClientSession) -> None:
    url = f"http://127.0.0.1:{refused_port()}"
    with pytest.raises(
        ConfigError, match=r"cannot reach SearXNG at .*; start it or set SEARXNG_URL"
    ):
        await provider(session, url).check()


@pytest.mark.parametrize(
    ("status", "advice"), [(429, "server.limiter: false"), (500, "see its log")]
)
async def test_check_fails_on_error_statuses_with_advice(
    searx: FakeSearxng, session: aiohttp.ClientSession, status: int, advice: str
) -> None:
    searx.fail(Status(status=status))
    with pytest.raises(ConfigError, match=advice):
        await provider(session, searx.url).check()


async def test_check_fails_when_the_address_is_not_searxng(
    searx: FakeSearxng, session: aiohttp.ClientSession
) -> None:
    with pytest.raises(ConfigError, match="no SearXNG search API"):
        await provider(session, searx.url + "/elsewhere").check()


async def test_url_without_scheme_is_a_config_error(session: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigError, match="not an http"):
        SearxngSearch(session, base_url="searx:8080")


# --- through the registry and the service --------------------------------------------------


async def test_registry_opens_a_checked_provider(searx: FakeSearxng, tmp_path: Path) -> None:
    searx.script("q", [Result(url="https://a.example/", title="A")])
    settings = Settings(data_dir=tmp_path, search="searxng", searxng_url=searx.url)
    async with search_provider(settings) as search:
        assert search.name == "searxng"
        assert [h.title for h in await search.search("q", limit=5)] == ["A"]
    assert [r.params.get("q") for r in searx.requests] == [None, "q"]  # the check came first


async def test_registry_refuses_to_start_when_json_is_disabled(tmp_path: Path) -> None:
    async with FakeSearxng(formats=("html",)) as searx:
        settings = Settings(data_dir=tmp_path, search="searxng", searxng_url=searx.url)
        with pytest.raises(ConfigError, match=r"search: formats: \[html, json\]"):
            async with search_provider(settings):
                pass


async def test_full_run_through_the_http_api_cites_searxng_results(
    searx: FakeSearxng, tmp_path: Path
) -> None:
    searx.script(
        "paris history",
        [
            Result(url="https://history.example/paris", title="Paris history", score=2.0),
            Result(url="https://shared.example/paris/?utm_source=x", title="Shared", score=1.0),
        ],
    )
    searx.script(
        "capital of france",
        [Result(url="https://shared.example/paris", title="Shared again", content="Capital")],
    )
    settings = Settings(data_dir=tmp_path, search="searxng", searxng_url=searx.url, pages_per_run=0)
    llm = ScriptedLLM(queries=["paris history", "capital of france"])
    server = TestServer(create_app(settings, llm=llm), host="127.0.0.1")
    await server.start_server()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            created = await client.post(
                str(server.make_url("/v1/runs")), json={"question": "Why Paris?"}
            )
            assert created.status_code == 201, created.text
            got = await listen(client, str(server.make_url(created.json()["events_url"])))
    finally:
        await server.close()
    name, done = got.last
    assert (name, done["status"]) == ("done", "completed"), done
    progress = [
        json.loads(e.data)
        for e in got.events
        if e.event == "phase" and json.loads(e.data)["status"] == "progress"
    ]
    found = {p["query"]: [s["url"] for s in p.get("sources", [])] for p in progress}
    assert set(found) == {"paris history", "capital of france"}
    assert "https://history.example/paris" in found["paris history"]
    urls = [s["url"] for s in done["sources"]]
    assert "https://history.example/paris" in urls
    assert {q.query for q in searx.searches} == {"paris history", "capital of france"}
