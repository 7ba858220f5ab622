"""The web panel in headless Chromium against hostile content, hostile links and hostile sites:
markup and script URLs from the stream, bidi overrides, a proxy's page instead of JSON, a page
of another site that opens the panel, and a run of 10,000 pieces and 500 sources."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Page, Route, expect

from research_service.replay_app import INSTANT, load_recordings, replay_app
from research_service.settings import Settings
from tests import browser as fixtures
from tests.browser import LOOP, Panel
from tests.conftest import MakeService

pytestmark = LOOP
# The browser fixtures (tests/browser.py), made visible to pytest in this module.
browser = fixtures.browser
make_service = fixtures.make_service
panel = fixtures.panel

FAST: Final = {"retry_ms": 50}
RUN_ID: Final = "00000000000000ab"
RLO: Final = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: every character after it is laid out reversed
ZWSP: Final = "\u200b"
PWN: Final = "window.__pwned=1"
MARKUP: Final = f'<img src=x onerror="{PWN}"></script><script>{PWN}</script>'
#: Source URLs a link must never be made of, and what the panel must show instead of a link.
SCRIPT_URLS: Final = [
    f"javascript:{PWN}",
    f"JaVaScRiPt:{PWN}",
    f" javascript:{PWN}",
    f"\tjava\nscript:{PWN}",
    f"data:text/html,<script>{PWN}</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "//evil.example/no-scheme",
]
WEB_URLS: Final = [
    "https://good.example@evil.example/x",
    "https://\u0430pple.example/",  # a look-alike host: its first letter is Cyrillic
]
# Whether the characters of `tail` (the last time it occurs in the element's text) are laid
# out left to right, as English is: a bidi override before them would turn them around.
IN_ORDER: Final = """
window.__inOrder = (node, tail) => {
  const start = node.textContent.lastIndexOf(tail);
  if (start < 0) return null;
  const xs = [];
  const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
  let offset = 0;
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    for (let i = 0; i < text.data.length; i++) {
      const at = offset + i;
      if (at < start || at >= start + tail.length || text.data[i] === " ") continue;
      const range = document.createRange();
      range.setStart(text, i);
      range.setEnd(text, i + 1);
      xs.push(range.getBoundingClientRect().left);
    }
    offset += text.data.length;
  }
  return xs.every((x, i) => i === 0 || x > xs[i - 1]);
};
"""
# Records, for each "Query … done" the status line announced, whether its end reads in order.
RECORD_QUERY_LINES: Final = (
    IN_ORDER
    + """
window.__queryLines = [];
new MutationObserver(() => {
  const status = document.getElementById('status');
  if (status && status.textContent.startsWith('Query ')) {
    window.__queryLines.push(window.__inOrder(status, ', 2 new sources.'));
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""
)


def recording(
    path: Path, *, question: str, sources: list[dict[str, Any]], pieces: list[str], failure: str
) -> None:
    """Write a completed (or, with `failure`, failed) run's recording with these contents."""
    listed = [{key: s[key] for key in ("id", "title", "url")} for s in sources]
    search = {"phase": "searching", "status": "progress", "round": 1, "total": 2}
    events: list[tuple[str, dict[str, Any]]] = [
        ("phase", {"phase": "planning", "status": "started"}),
        ("phase", {"phase": "planning", "status": "completed", "queries": [MARKUP, "other"]}),
        ("phase", {"phase": "searching", "status": "started", "total": 2, "round": 1}),
        ("phase", {**search, "query": MARKUP, "completed": 1, "sources": listed}),
        ("phase", {**search, "query": "other", "completed": 2, "error": MARKUP}),
        (
            "phase",
            {"phase": "searching", "status": "completed", "sources": len(sources), "rounds": 1},
        ),
        ("phase", {"phase": "synthesizing", "status": "started", "sources": len(sources)}),
        *(("token", {"text": piece}) for piece in pieces),
        ("phase", {"phase": "synthesizing", "status": "completed"}),
    ]
    error = {"code": "model_error", "message": failure} if failure else None
    if error is not None:
        events.append(("error", {**error, "phase": "synthesizing"}))
    done = {
        "status": "failed" if failure else "completed",
        "answer": "".join(pieces),
        "sources": sources,
        "timings_ms": {"planning": 1, "searching": 2, "synthesizing": 3, "total": 6},
        "error": error,
        "usage": {
            "prompt_tokens": 1,
            "completion_tokens": 1,
            "by_stage": {},
            "estimated": True,
            "budget": 9,
        },
        "truncated": False,
    }
    events.append(("done", done))
    header = {
        "format": "research-service-recording",
        "version": 1,
        "run_id": RUN_ID,
        "question": question,
        "options": {"breadth": 2, "max_sources": 8, "depth": 1},
        "created_at": "2026-11-26T10:00:00.000Z",
        "service_version": "0.1.0",
    }
    lines = [header] + [
        {"seq": seq, "event": name, "data": {**data, "elapsed_ms": seq}, "t_ms": seq}
        if name == "phase"
        else {"seq": seq, "event": name, "data": data, "t_ms": seq}
        for seq, (name, data) in enumerate(events, start=1)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


@contextlib.asynccontextmanager
async def replayed(path: Path) -> AsyncIterator[TestServer]:
    """A replay server with the recording at `path`, every event there from the start."""
    settings = Settings(data_dir=path.parent / "data", retry_ms=50)
    server = TestServer(replay_app(settings, load_recordings([path]), speed=INSTANT))
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def open_run(page: Page, server: TestServer) -> None:
    """Open the recorded run's share link and wait for its summary."""
    await page.goto(str(server.make_url(f"/?run={RUN_ID}")))
    await expect(page.locator("#summary")).to_be_visible()


async def test_hostile_content_is_text_and_only_web_urls_become_links(
    panel: Panel, tmp_path: Path
) -> None:
    """Markup, script and data URLs, a 1 MB snippet, a Markdown link: nothing runs or links."""
    urls = SCRIPT_URLS + WEB_URLS
    sources = [
        {"id": n, "title": f"{MARKUP} {n}", "url": url, "snippet": f"{MARKUP}{ZWSP}"}
        for n, url in enumerate(urls, start=1)
    ]
    sources[0]["snippet"] = "x" * 1_000_000
    pieces = [f"[click](javascript:{PWN}) ", MARKUP, " [1] [9", f"{ZWSP}] [{ZWSP}2] end"]
    path = tmp_path / "run.jsonl"
    recording(path, question=MARKUP, sources=sources, pieces=pieces, failure=MARKUP)
    page = panel.page
    async with replayed(path) as server:
        await open_run(page, server)
        await expect(page.locator("#summary .badge")).to_have_text("Failed")
    await expect(page.locator("#run-question")).to_have_text(MARKUP)
    await expect(page.locator("#run-error")).to_have_text(f"The run failed: {MARKUP}")
    await expect(page.locator("#answer")).to_have_js_property("textContent", "".join(pieces))
    await expect(page.locator("#answer a.cite")).to_have_text(["[1]"])
    await expect(page.locator(".query-status").nth(1)).to_have_text(f"Failed: {MARKUP}")
    await expect(page.locator("#sources .source")).to_have_count(len(urls))
    await expect(page.locator("#sources a.source-title")).to_have_count(len(WEB_URLS))
    for n, url in enumerate(SCRIPT_URLS, start=1):
        await expect(page.locator(f"#source-{n} .source-host")).to_have_text(
            url.split("/")[-1] if url.startswith("file:") else url
        )
    hosts = page.locator("#sources a.source-title + .source-host")
    await expect(hosts).to_have_text(["evil.example", "xn--pple-43d.example"])
    links: list[dict[str, str]] = await page.locator("a[href]").evaluate_all(
        "links => links.map(a => ({href: a.href, target: a.target, rel: a.rel}))"
    )
    for link in links:
        assert link["href"].startswith(("http://", "https://")), link
        if link["target"] == "_blank":
            assert link["rel"] == "noopener noreferrer", link
    await expect(page.locator("img[src='x'], #run script, #answer b")).to_have_count(0)
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    # The page is still usable: no sideways scrolling, and a new question can be typed.
    assert await page.evaluate("document.documentElement.scrollWidth") <= 1280
    await page.locator("#question").fill("Still usable?")
    await expect(page.locator("#question")).to_have_value("Still usable?")


async def test_a_run_of_10000_pieces_and_500_sources_is_shown_whole(
    panel: Panel, tmp_path: Path
) -> None:
    sources = [
        {
            "id": n,
            "title": f"Source {n}",
            "url": f"https://s{n}.example/",
            "snippet": f"Snippet {n}",
        }
        for n in range(1, 501)
    ]
    pieces = [f"word{n} [{n % 500 + 1}] " for n in range(10_000)]
    path = tmp_path / "run.jsonl"
    recording(path, question="How much?", sources=sources, pieces=pieces, failure="")
    page = panel.page
    async with replayed(path) as server:
        await open_run(page, server)
    await expect(page.locator("#summary .badge")).to_have_text("Completed")
    await expect(page.locator("#sources .source")).to_have_count(500)
    await expect(page.locator("#source-count")).to_have_text("(500)")
    await expect(page.locator("#answer")).to_have_js_property("textContent", "".join(pieces))
    await expect(page.locator("#answer a.cite")).to_have_count(10_000)
    ids = await page.locator("#sources .source-id").all_text_contents()
    assert ids == [str(n) for n in range(1, 501)]


async def test_a_link_cannot_put_its_words_in_the_pages_alert(
    panel: Panel, make_service: MakeService
) -> None:
    """A `?run=` that is no run id is not repeated: a link could make the panel say anything."""
    service = await make_service(**FAST)
    words = f"{RLO}evil.example at again in sign and expired session Your"
    page = panel.page
    await page.goto(service.url("/") + "?run=" + words.replace(" ", "%20"))
    error = page.locator("#form-error")
    await expect(error).to_contain_text("is not a run id (16 hex characters)")
    await expect(error).not_to_contain_text("evil.example")
    await expect(error).not_to_contain_text(RLO)
    await expect(page.locator("#run")).to_be_hidden()


async def test_run_text_cannot_turn_the_panels_own_words_around(
    panel: Panel, make_service: MakeService
) -> None:
    """A query or a provider's reason with a bidi override leaves the panel's words readable."""
    service = await make_service(**FAST)
    service.llm.queries = [f"{RLO}alpha"]
    service.llm.retries = [(2, 1500, f"{RLO}429 Too Many Requests")]
    service.llm.hold_after = 0
    page = panel.page
    await page.add_init_script(RECORD_QUERY_LINES)
    await page.goto(service.url("/"))
    await page.locator("#question").fill("Does it read the right way?")
    await page.get_by_role("button", name="Research").click(no_wait_after=True)
    await service.until_held()
    note = page.locator("#step-synthesizing .step-note")
    await expect(note).to_have_text(f"{RLO}429 Too Many Requests: attempt 2 in 1.5 s")
    assert await note.evaluate("n => window.__inOrder(n, ': attempt 2 in 1.5 s')") is True
    assert await page.evaluate("window.__queryLines") == [True]
    service.llm.release.set()
    await expect(page.locator("#summary .badge")).to_have_text("Completed")


async def test_a_page_instead_of_json_is_explained_not_parsed_aloud(
    panel: Panel, make_service: MakeService
) -> None:
    """A proxy's sign-in page answered 200 to `POST v1/runs`: the panel says what came back."""
    service = await make_service(**FAST)
    page = panel.page

    async def sign_in_page(route: Route) -> None:
        body = "<html><title>Portal</title>Sign in to the network</html>"
        await route.fulfill(status=200, body=body, content_type="text/html")

    await page.route(re.compile(r"/v1/runs$"), sign_in_page)
    await page.goto(service.url("/"))
    await page.locator("#question").fill("Through a portal?")
    await page.get_by_role("button", name="Research").click(no_wait_after=True)
    error = page.locator("#form-error")
    await expect(error).to_have_text(
        "Could not start the run: the service answered 200 with text/html, not its JSON: "
        "is a proxy or a sign-in page in the way?"
    )
    await expect(page.locator("#submit")).to_be_enabled()


async def test_another_site_that_opens_the_panel_keeps_no_handle_on_it(
    panel: Panel, make_service: MakeService
) -> None:
    service = await make_service(**FAST)
    link = service.url("/")

    async def opener(request: web.Request) -> web.Response:
        return web.Response(text="<p>another site</p>", content_type="text/html")

    app = web.Application()
    app.router.add_get("/", opener)
    site = TestServer(app, host="127.0.0.1")
    await site.start_server()
    page = panel.page
    try:
        # localhost is another site than the service's 127.0.0.1.
        await page.goto(f"http://localhost:{site.port}/")
        async with page.context.expect_page() as popped:
            await page.evaluate("url => { window.__panel = window.open(url); }", link)
        popup = await popped.value
        await expect(popup.locator("#question")).to_be_visible()
        assert await popup.evaluate("window.opener") is None
        assert await page.evaluate("window.__panel.closed") is True
    finally:
        await site.close()


async def test_a_string_never_becomes_markup_in_the_page(
    panel: Panel, make_service: MakeService
) -> None:
    """Trusted Types: an HTML sink given a string throws, whatever script tries it."""
    service = await make_service(**FAST)
    page = panel.page
    await page.goto(service.url("/"))
    await expect(page.locator("#question")).to_be_focused()
    outcome = await page.evaluate(
        """() => {
             try { document.getElementById('intro').innerHTML = '<img src=x>'; return 'markup'; }
             catch (error) { return error.name; }
           }"""
    )
    assert outcome == "TypeError"
    await expect(page.locator("img[src='x']")).to_have_count(0)
