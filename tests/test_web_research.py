"""Full runs with web search: fake SearXNG results, pages read from a loopback web."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
from aiohttp.test_utils import TestServer

from research_service.app import create_app
from research_service.settings import Settings
from tests.fake_searxng import FakeSearxng, Result
from tests.fakes import ScriptedLLM
from tests.loopback_web import ARTICLE_PARAGRAPHS, LoopbackWeb
from tests.sse import Received, listen


async def run_research(
    searx: FakeSearxng, tmp_path: Path, llm: ScriptedLLM, **overrides: Any
) -> Received:
    options: dict[str, Any] = {"fetch_allow": "127.0.0.1"}  # the loopback web's address
    settings = Settings(
        data_dir=tmp_path, search="searxng", searxng_url=searx.url, **(options | overrides)
    )
    server = TestServer(create_app(settings, llm=llm), host="127.0.0.1")
    await server.start_server()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            created = await client.post(
                str(server.make_url("/v1/runs")),
                json={"question": "How was the Skerryvore lighthouse built?"},
            )
            return await listen(client, str(server.make_url(created.json()["events_url"])))
    finally:
        await server.close()


def pages(got: Received) -> list[dict[str, Any]]:
    found = [json.loads(e.data) for e in got.events if e.event == "phase"]
    return [d["page"] for d in found if "page" in d]


async def test_web_results_are_read_and_their_passages_reach_the_answer(tmp_path: Path) -> None:
    llm = ScriptedLLM(queries=["skerryvore lighthouse", "skerryvore granite"])
    async with LoopbackWeb() as web_pages, FakeSearxng() as searx:
        article = web_pages.url("/article")
        searx.script(
            "skerryvore lighthouse",
            [
                Result(url=article, title="Skerryvore", content="A lighthouse off Tiree."),
                Result(url=article + "?utm_source=feed", title="Dup", content="same page"),
                Result(url=web_pages.url("/to/metadata"), title="Trap", content="metadata"),
            ],
        )
        searx.script(
            "skerryvore granite",
            [Result(url=web_pages.url("/paper.pdf"), title="Paper", content="a pdf")],
        )
        got = await run_research(searx, tmp_path, llm)
    _, done = got.last
    assert done["status"] == "completed", done
    urls = [s["url"] for s in done["sources"]]
    assert urls.count(article) == 1  # the tracking-parameter copy was the same source
    by_url = {s["url"]: s for s in done["sources"]}
    assert ARTICLE_PARAGRAPHS[1][:40] in by_url[article]["snippet"]  # a passage, not the snippet
    assert "All rights reserved" not in by_url[article]["snippet"]  # boilerplate dropped
    read = {p["url"]: p for p in pages(got)}
    assert read[article]["chars"] > 100
    assert read[web_pages.url("/to/metadata")]["error"]["code"] == "page_refused"
    assert "169.254.169.254" in read[web_pages.url("/to/metadata")]["error"]["message"]
    assert read[web_pages.url("/paper.pdf")]["error"]["code"] == "page_not_text"
    assert by_url[web_pages.url("/paper.pdf")]["snippet"] == "a pdf"  # kept its snippet
    phases = [json.loads(e.data) for e in got.events if e.event == "phase"]
    searching_done = next(
        p for p in phases if p["phase"] == "searching" and p["status"] == "completed"
    )
    assert searching_done["pages"] == 1


async def test_without_the_allow_list_loopback_pages_are_refused(tmp_path: Path) -> None:
    llm = ScriptedLLM(queries=["skerryvore"])
    async with LoopbackWeb() as web_pages, FakeSearxng() as searx:
        searx.script(
            "skerryvore", [Result(url=web_pages.url("/article"), title="S", content="snip")]
        )
        got = await run_research(searx, tmp_path, llm, fetch_allow="")
        assert web_pages.requests == []  # refused before any connection
    (page,) = pages(got)
    assert page["error"]["code"] == "page_refused"
    assert "--fetch-allow" in page["error"]["message"]
    assert got.last[1]["sources"][0]["snippet"] == "snip"
    assert got.last[1]["status"] == "completed"


async def test_pages_per_run_zero_keeps_snippets_only(tmp_path: Path) -> None:
    llm = ScriptedLLM(queries=["skerryvore"])
    async with LoopbackWeb() as web_pages, FakeSearxng() as searx:
        searx.script(
            "skerryvore", [Result(url=web_pages.url("/article"), title="S", content="snip")]
        )
        got = await run_research(searx, tmp_path, llm, pages_per_run=0)
        assert web_pages.requests == []
    assert pages(got) == []
    assert got.last[1]["sources"][0]["snippet"] == "snip"


async def test_a_result_whose_scheme_is_in_capitals_is_read_as_a_page(tmp_path: Path) -> None:
    """SearXNG's results are kept by their scheme in any case; the pages to read were picked
    by a case-sensitive test, so `HTTP://…` was kept as a source and never read, unsaid."""
    llm = ScriptedLLM(queries=["skerryvore"])
    async with LoopbackWeb() as web_pages, FakeSearxng() as searx:
        shouting = web_pages.url("/article").replace("http://", "HTTP://", 1)
        searx.script("skerryvore", [Result(url=shouting, title="S", content="snip")])
        got = await run_research(searx, tmp_path, llm)
        assert web_pages.requests == ["/article"]
    (page,) = pages(got)
    assert "error" not in page
    assert got.last[1]["status"] == "completed"
