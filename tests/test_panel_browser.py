"""The web panel in headless Chromium against the real service: runs, resumes, cancel, safety."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer
from playwright.async_api import Page, Request, Route, expect

from research_service.providers.base import SearchHit
from research_service.replay_app import INSTANT, load_recordings, replay_app
from research_service.settings import Settings
from tests import browser as fixtures
from tests.browser import LOOP, Panel
from tests.conftest import MakeService, Service
from tests.drop_proxy import DropProxy

pytestmark = LOOP
# The browser fixtures (tests/browser.py), made visible to pytest in this module.
browser = fixtures.browser
make_service = fixtures.make_service
panel = fixtures.panel

RECORDINGS = Path(__file__).parent / "recordings"
UNKNOWN_ID = "0123456789abcdef"
FAST = {"retry_ms": 50}
HITS = {
    "alpha": [
        SearchHit("Alpha guide", "https://alpha.example/guide", "All about alpha."),
        SearchHit("Alpha reference", "https://www.docs.example:8443/alpha", "Alpha, in detail."),
    ],
    "beta": [SearchHit("Beta notes", "http://beta.example/notes?x=1", "Beta, briefly.")],
}
# Citations whole, split across pieces ("[" | "2, 3" | "]") and half-split ("[1" | "]."), then
# brackets that are not citations: no such source, too many digits, a bracket left open.
PIECES = [
    "Alpha comes first ",
    "[1]",
    " and beta follows [",
    "2, 3",
    "]. Split",
    " cite [1",
    "]. Not [a] cite, nor [",
    "9] nor [12345] [",
]


def port(service: Service) -> int:
    assert service.server.port is not None
    return service.server.port


async def ask(page: Page, service: Service | str, question: str) -> str:
    """Open the panel, ask `question` with the button, and return the new run's id."""
    base = service if isinstance(service, str) else service.url("/")
    await page.goto(base)
    await page.locator("#question").fill(question)
    await page.get_by_role("button", name="Research").click(no_wait_after=True)
    await expect(page).to_have_url(re.compile(r"/\?run=[0-9a-f]{16}$"))
    return page.url.rsplit("=", 1)[1]


async def wait_answer(page: Page, expected: str) -> None:
    """Wait until the answer's text is exactly `expected` (no whitespace folding)."""
    await expect(page.locator("#answer")).to_have_js_property("textContent", expected)


async def snapshot(page: Page, service: Service, run_id: str) -> dict[str, Any]:
    response = await page.request.get(service.url(f"/v1/runs/{run_id}"))
    assert response.ok
    body: dict[str, Any] = await response.json()
    return body


async def expect_finished(page: Page, status: str = "Completed") -> None:
    summary = page.locator("#summary")
    await expect(summary).to_be_visible()
    await expect(summary.locator(".badge")).to_have_text(status)
    await expect(page.locator("#answer")).to_have_attribute("aria-busy", "false")
    await expect(page.locator("#cancel")).to_be_disabled()


# Collects every text the polite status region (#status) shows, in order.
RECORD_ANNOUNCEMENTS = """
window.__announced = [];
new MutationObserver(() => {
  const text = document.getElementById('status')?.textContent;
  if (text && window.__announced.at(-1) !== text) window.__announced.push(text);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def assert_announcements(announced: list[str]) -> None:
    """Each phase change and finished query was announced, and no answer text."""
    assert len(announced) == 10, announced
    assert announced[:4] == [
        "Connecting to the run…",
        "Planning the search…",
        "Planned 2 search queries.",
        "Searching…",
    ]
    # The two queries run concurrently: either may finish first.
    queries = sorted(re.sub(r"^Query \d", "Query n", a) for a in announced[4:6])
    assert queries == [
        "Query n of 2 done: “alpha”, 2 new sources.",
        "Query n of 2 done: “beta”, 1 new source.",
    ]
    assert announced[6:9] == [
        "Search finished: 3 sources.",
        "Writing the answer from 3 sources…",
        "Answer written.",
    ]
    assert re.fullmatch(r"Completed in \d+(\.\d)? (ms|s)\.", announced[9])


async def test_a_full_run_shows_phases_queries_sources_and_a_linked_answer(
    panel: Panel, make_service: MakeService, tmp_path: Path
) -> None:
    service = await make_service(**FAST)
    service.llm.queries = ["alpha", "beta"]
    service.llm.pieces = PIECES
    service.search.results.update(HITS)
    page = panel.page
    await page.add_init_script(RECORD_ANNOUNCEMENTS)
    run_id = await ask(page, service, "How do alpha and beta relate?")
    await expect_finished(page)
    await expect(page.locator("#status")).to_have_attribute("role", "status")
    assert_announcements(await page.evaluate("window.__announced"))
    await expect(page.locator("#run-question")).to_have_text("How do alpha and beta relate?")
    await expect(page.locator("#status")).to_have_text(re.compile(r"^Completed in "))

    for phase in ("planning", "searching", "synthesizing"):
        step = page.locator(f"#step-{phase}")
        await expect(step).to_have_attribute("data-state", "done")
        await expect(step.locator(".step-state")).to_have_text("Done")
        await expect(step.locator(".step-time")).to_have_text(re.compile(r"^\d+(\.\d)? (ms|s)$"))
    await expect(page.locator("#step-planning .step-detail")).to_have_text("2 queries planned")
    await expect(page.locator("#step-searching .step-detail")).to_have_text("3 sources kept")

    queries = page.locator("#queries .query")
    await expect(queries).to_have_count(2)
    await expect(queries.locator(".query-text")).to_have_text(["alpha", "beta"])
    await expect(queries.locator(".query-status")).to_have_text(["2 new sources", "1 new source"])

    run = await snapshot(page, service, run_id)
    assert run["status"] == "completed"
    cards = page.locator("#sources .source")
    await expect(cards).to_have_count(3)
    hosts = {
        "https://alpha.example/guide": "alpha.example",
        "https://www.docs.example:8443/alpha": "docs.example:8443",
        "http://beta.example/notes?x=1": "beta.example",
    }
    for source in run["sources"]:
        card = page.locator(f"#source-{source['id']}")
        await expect(card.locator(".source-title")).to_have_text(
            source["title"] + " (opens in a new tab)"
        )
        await expect(card.locator("a.source-title")).to_have_attribute("href", source["url"])
        await expect(card.locator(".source-host")).to_have_text(hosts[source["url"]])

    await wait_answer(page, "".join(PIECES))
    links = await page.locator("#answer a.cite").evaluate_all(
        "links => links.map(a => [a.textContent, a.getAttribute('href')])"
    )
    assert links == [
        ["[1]", "#source-1"],
        ["2", "#source-2"],
        ["3", "#source-3"],
        ["[1]", "#source-1"],
    ]
    by_id = {s["id"]: s["title"] for s in run["sources"]}
    await page.locator("#answer a.cite").nth(1).click()
    await expect(page).to_have_url(re.compile(r"#source-2$"))
    target = page.locator(".source:target .source-title")
    await expect(target).to_have_text(by_id[2] + " (opens in a new tab)")

    summary = page.locator("#summary")
    await expect(summary.locator("#summary-timings dt")).to_have_text(
        ["Planning", "Searching", "Synthesizing", "Total"]
    )
    await expect(summary.locator("#summary-usage dt")).to_have_text(
        ["Prompt tokens", "Completion tokens", "Token budget"]
    )
    shot = tmp_path / "panel-finished.png"
    await page.screenshot(path=shot, full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")


async def test_the_answer_survives_a_dropped_connection_without_repeating_text(
    panel: Panel, make_service: MakeService
) -> None:
    service = await make_service(**FAST)
    service.llm.pieces = [f"word{n} " for n in range(6)] + ["[1]", " after ", "[", "2]."]
    service.llm.hold_after = 4
    proxy = DropProxy("127.0.0.1", port(service))
    await proxy.start()
    page = panel.page
    # Records the "Reconnecting…" state however briefly it shows (retry is 50 ms here).
    await page.add_init_script(
        """new MutationObserver(() => {
             const state = document.getElementById('connection');
             if (state && state.textContent.includes('Reconnecting')) {
               document.documentElement.dataset.sawReconnecting = 'yes';
             }
           }).observe(document, {subtree: true, childList: true, characterData: true});"""
    )
    resumed_from: list[str] = []

    async def on_request(request: Request) -> None:
        if request.url.endswith("/events"):
            headers = await request.all_headers()
            if "last-event-id" in headers:
                resumed_from.append(headers["last-event-id"])

    page.on("request", on_request)
    try:
        run_id = await ask(page, proxy.url("/"), "What survives a drop?")
        await service.until_held()
        await wait_answer(page, "word0 word1 word2 word3 ")
        await expect(page.locator("#answer")).to_have_attribute("aria-busy", "true")
        accepted = proxy.accepted
        assert await proxy.drop_all() >= 1
        await proxy.wait_accepted(accepted + 1)
        await expect(page.locator("html")).to_have_attribute("data-saw-reconnecting", "yes")
        await expect(page.locator("#connection")).to_be_empty()
        await wait_answer(page, "word0 word1 word2 word3 ")
        service.llm.release.set()
        await expect_finished(page)
        await wait_answer(page, service.llm.answer)
        assert resumed_from, "the reconnect did not send Last-Event-ID"
        assert all(re.fullmatch(rf"{run_id}:\d+", value) for value in resumed_from)
        assert await page.locator("#answer a.cite").count() == 2
    finally:
        await proxy.close()


async def test_a_refused_reconnect_is_retried_with_last_event_id(
    panel: Panel, make_service: MakeService
) -> None:
    """After a 502 the EventSource gives up; the panel reopens it from its last event."""
    service = await make_service(**FAST)
    service.llm.pieces = ["one ", "two ", "three ", "four."]
    service.llm.hold_after = 2
    proxy = DropProxy("127.0.0.1", port(service))
    await proxy.start()
    page = panel.page
    streams: list[str] = []

    async def gateway(route: Route) -> None:
        streams.append(route.request.url)
        if len(streams) == 2:  # the browser's own reconnect after the drop
            await route.fulfill(status=502, body="Bad gateway", content_type="text/plain")
        else:
            await route.continue_()

    await page.route(re.compile(r"/v1/runs/[0-9a-f]{16}/events"), gateway)
    try:
        run_id = await ask(page, proxy.url("/"), "What happens after a 502?")
        await service.until_held()
        await wait_answer(page, "one two ")
        await proxy.drop_all()
        await expect(page.locator("#connection")).to_have_text("Reconnecting…")
        await expect(page.locator("#connection")).to_be_empty()
        service.llm.release.set()
        await expect_finished(page)
        await wait_answer(page, "one two three four.")
        assert len(streams) == 3
        assert re.search(rf"\?last_event_id={run_id}%3A\d+$", streams[2]), streams[2]
    finally:
        await proxy.close()


async def test_a_run_that_ends_while_its_stream_is_refused_is_shown_whole_from_its_recording(
    panel: Panel, make_service: MakeService
) -> None:
    """A proxy answers every stream 502 while the run goes on; once it has ended, the panel
    shows the run as a stream would have: every phase done, its queries, and an answer whose
    citations link to its sources (it once painted the snapshot's answer before the sources,
    and the phases as not reached)."""
    service = await make_service(**FAST)
    service.llm.queries = ["alpha", "beta"]
    service.llm.pieces = PIECES
    service.search.results.update(HITS)
    page = panel.page

    async def refuse(route: Route) -> None:
        await route.fulfill(status=502, body="Bad gateway", content_type="text/plain")

    await page.route(re.compile(r"/v1/runs/[0-9a-f]{16}/events"), refuse)
    run_id = await ask(page, service, "How do alpha and beta relate?")
    await service.wait_done(run_id)
    await expect_finished(page)
    await wait_answer(page, "".join(PIECES))
    await expect(page.locator("#run .step[data-state='done']")).to_have_count(3)
    await expect(page.locator("#queries li")).to_have_count(2)
    await expect(page.locator("#sources .source")).to_have_count(3)
    await expect(page.locator("#answer a.cite")).to_have_count(4)  # as in a full run, above


async def test_enter_pressed_twice_starts_one_run(panel: Panel, make_service: MakeService) -> None:
    """The second Enter comes while the first question's run is being created."""
    service = await make_service(**FAST)
    page = panel.page
    posts: list[str] = []
    second = asyncio.Event()

    async def hold_creation(route: Route) -> None:
        if route.request.method == "POST":
            posts.append(route.request.url)
            await second.wait()
        await route.continue_()

    await page.route(re.compile(r"/v1/runs$"), hold_creation)
    await page.goto(service.url("/"))
    await page.locator("#question").fill("Asked twice?")
    await page.keyboard.press("Enter")
    await expect(page.locator("#submit")).to_be_disabled()
    await page.keyboard.press("Enter")
    second.set()
    await expect_finished(page)
    assert len(posts) == 1
    listed = await page.request.get(service.url("/v1/runs"))
    assert len((await listed.json())["runs"]) == 1


async def test_an_invalid_option_in_the_closed_options_is_pointed_at(
    panel: Panel, make_service: MakeService
) -> None:
    """The browser cannot show its message on a field inside a closed <details>: asking
    opened nothing, said nothing and sent nothing. The options open on the field."""
    service = await make_service(**FAST)
    page = panel.page
    await page.goto(service.url("/"))
    options = page.locator("details.options")
    await options.locator("summary").click()
    await page.locator("input[name=breadth]").fill("0")
    await options.locator("summary").click()
    await expect(options).not_to_have_attribute("open", "")
    await page.locator("#question").fill("With no queries?")
    await page.keyboard.press("Enter")
    await expect(options).to_have_attribute("open", "")
    await expect(page.locator("input[name=breadth]")).to_be_focused()
    assert page.url == service.url("/")  # no run was made
    assert service.manager.active_runs == 0


async def test_cancel_stops_the_run(panel: Panel, make_service: MakeService) -> None:
    service = await make_service(**FAST)
    service.llm.retries = [(2, 1500, "429 Too Many Requests")]
    service.llm.hold_after = 0  # held after the retry, before the first piece
    page = panel.page
    run_id = await ask(page, service, "Can I stop this?")
    await service.until_held()
    note = page.locator("#step-synthesizing .step-note")
    await expect(note).to_have_text("429 Too Many Requests: attempt 2 in 1.5 s")
    cancel = page.get_by_role("button", name="Cancel")
    await expect(cancel).to_be_enabled()
    await cancel.click(no_wait_after=True)
    await expect_finished(page, "Cancelled")
    await expect(page.locator("#summary-notes")).to_have_text("the run was cancelled on request")
    await expect(page.locator("#status")).to_have_text(re.compile(r"^Cancelled after "))
    await expect(page.locator("#step-synthesizing")).to_have_attribute("data-state", "stopped")
    await expect(note).to_be_empty()
    await wait_answer(page, "")
    assert (await snapshot(page, service, run_id))["status"] == "cancelled"


async def test_markup_from_the_stream_is_shown_as_text(
    panel: Panel, make_service: MakeService
) -> None:
    service = await make_service(**FAST)
    question = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
    title = '<img src=x onerror="window.__xss=3">'
    service.llm.queries = ["evil"]
    service.llm.pieces = ["<b>bold</b> ", '<img src=x onerror="window.__xss=4"> ', "[1] [2]"]
    service.search.results["evil"] = [
        SearchHit(title, "https://evil.example/a", "<script>window.__xss=5</script>"),
        SearchHit("<script>window.__xss=6</script>", "javascript:window.__xss=7", "x"),
    ]
    page = panel.page
    await ask(page, service, question)
    await expect_finished(page)
    await expect(page.locator("#run-question")).to_have_text(question)
    assert await page.title() == f"{question} · research-service"
    await expect(page.locator("#source-1 .source-title")).to_have_text(
        title + " (opens in a new tab)"
    )
    await expect(page.locator("#source-2 .source-title")).to_have_text(
        "<script>window.__xss=6</script>"
    )
    await expect(page.locator("#source-2 a")).to_have_count(0)
    await expect(page.locator("#source-2 .source-host")).to_have_text("javascript:window.__xss=7")
    await expect(page.locator('a[href^="javascript:"]')).to_have_count(0)
    await wait_answer(page, "".join(service.llm.pieces))
    await expect(page.locator("img[src='x'], #run script, #answer b")).to_have_count(0)
    assert await page.evaluate("typeof window.__xss") == "undefined"
    # The source link was still made for the https source, and the citations point at both.
    await expect(page.locator("#answer a.cite")).to_have_count(2)
    # Attached from the link, the question comes from the snapshot: still text.
    await page.reload()
    await expect_finished(page)
    await expect(page.locator("#run-question")).to_have_text(question)
    await expect(page.locator("#question")).to_have_value(question)
    await expect(page.locator("img[src='x'], #run script, #answer b")).to_have_count(0)
    assert await page.evaluate("typeof window.__xss") == "undefined"


async def finished_run(page: Page, service: Service, question: str) -> str:
    """The id of a run of `question`, started outside the panel and finished."""
    created = await page.request.post(
        service.url("/v1/runs"),
        data=json.dumps({"question": question}),
        headers={"Content-Type": "application/json"},
    )
    run_id: str = (await created.json())["id"]
    await service.wait_done(run_id)
    return run_id


async def test_a_shared_link_shows_a_finished_run(panel: Panel, make_service: MakeService) -> None:
    service = await make_service(**FAST)
    service.llm.pieces = PIECES
    service.search.results.update(HITS)
    service.llm.queries = ["alpha", "beta"]
    page = panel.page
    run_id = await finished_run(page, service, "Shared?")
    await page.goto(service.url(f"/?run={run_id}"))
    await expect_finished(page)
    await expect(page.locator("#run-question")).to_have_text("Shared?")
    await expect(page.locator("#question")).to_have_value("Shared?")
    await expect(page.locator("#run .step[data-state='done']")).to_have_count(3)
    await expect(page.locator("#queries .query[data-state='done']")).to_have_count(2)
    await expect(page.locator("#sources .source")).to_have_count(3)
    await wait_answer(page, "".join(PIECES))
    await expect(page.locator("#answer a.cite")).to_have_count(4)
    await expect(page.locator("#share-link")).to_have_attribute("href", f"/?run={run_id}")


async def test_a_shared_link_with_tracking_parameters_attaches_and_drops_them(
    panel: Panel, make_service: MakeService
) -> None:
    """A link that came back through a newsletter: the run shows, the address is the bare link."""
    service = await make_service(**FAST)
    service.llm.pieces = PIECES
    service.search.results.update(HITS)
    page = panel.page
    run_id = await finished_run(page, service, "Shared?")
    await page.goto(service.url(f"/?utm_source=newsletter&run={run_id}&fbclid=IwAR0"))
    await expect_finished(page)
    await expect(page.locator("#run-question")).to_have_text("Shared?")
    await expect(page).to_have_url(service.url(f"/?run={run_id}"))


async def test_an_unknown_run_says_so(panel: Panel, make_service: MakeService) -> None:
    service = await make_service(**FAST)
    page = panel.page
    await page.goto(service.url(f"/?run={UNKNOWN_ID}"))
    error = page.locator("#form-error")
    await expect(error).to_be_visible()
    await expect(error).to_contain_text(f"There is no run {UNKNOWN_ID} on this service")
    await expect(page.locator("#run")).to_be_hidden()
    await page.goto(service.url("/?run=not-a-run"))
    await expect(error).to_contain_text("is not a run id")


async def test_the_panel_fits_a_360_px_screen(panel: Panel, make_service: MakeService) -> None:
    service = await make_service(**FAST)
    long_word = "supercalifragilistic" * 6
    service.llm.queries = [long_word, "short"]
    service.llm.pieces = [f"{long_word} ", "[1]."]
    service.search.results[long_word] = [
        SearchHit(long_word, f"https://{'long-host-name' * 4}.example/{long_word}", long_word)
    ]
    page = panel.page
    await page.set_viewport_size({"width": 360, "height": 740})
    await page.goto(service.url("/"))
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    await page.locator("#question").fill(f"Does {long_word} fit?")
    await page.locator(".options summary").click()
    await page.get_by_label("Max sources").fill("1")
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    await page.get_by_role("button", name="Research").click(no_wait_after=True)
    await expect_finished(page)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360
    # The changed option went with the question; the unchanged ones were left to the server.
    run = await snapshot(page, service, page.url.rsplit("=", 1)[1])
    assert run["options"] == {"breadth": 3, "max_sources": 1, "depth": 1}
    await expect(page.locator("#sources .source")).to_have_count(1)


async def test_a_question_can_be_asked_with_the_keyboard_only(
    panel: Panel, make_service: MakeService
) -> None:
    service = await make_service(**FAST)
    page = panel.page
    await page.goto(service.url("/"))
    await expect(page.locator("#question")).to_be_focused()
    await page.keyboard.type("Typed, not clicked?")
    await page.keyboard.press("Enter")
    await expect_finished(page)
    await expect(page.locator("#run-question")).to_have_text("Typed, not clicked?")

    # The form's controls are reachable with Tab and show where the focus is.
    await page.locator("#question").focus()
    await page.keyboard.press("Shift+Enter")
    await expect(page.locator("#question")).to_have_value("Typed, not clicked?\n")
    for _ in range(6):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "submit":
            break
    submit = page.locator("#submit")
    await expect(submit).to_be_focused()
    assert await submit.evaluate("b => b.matches(':focus-visible')")
    outline = await submit.evaluate("b => getComputedStyle(b).outlineStyle")
    assert outline == "solid"
    first = page.url
    await page.keyboard.press("Enter")
    await expect(page).not_to_have_url(first)
    await expect_finished(page)


async def test_the_panel_plays_a_recorded_run(panel: Panel, tmp_path: Path) -> None:
    recordings = load_recordings(
        [RECORDINGS / "builtin_completed.jsonl", RECORDINGS / "builtin_failed.jsonl"]
    )
    completed, failed = recordings
    done = completed.events[-1].data
    app = replay_app(Settings(data_dir=tmp_path / "data", retry_ms=50), recordings, speed=1.0)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    page = panel.page
    try:
        await page.goto(str(server.make_url(f"/?run={completed.run_id}")))
        await expect_finished(page)
        await expect(page.locator("#run-question")).to_have_text(completed.question)
        await wait_answer(page, done["answer"])
        await expect(page.locator("#sources .source")).to_have_count(len(done["sources"]))

        await page.goto(str(server.make_url(f"/?run={failed.run_id}")))
        await expect_finished(page, "Failed")
        message = failed.events[-1].data["error"]["message"]
        await expect(page.locator("#run-error")).to_have_text(f"The run failed: {message}")
        await expect(page.locator("#step-searching")).to_have_attribute("data-state", "failed")

        # A replay server starts no runs: the panel shows its reason.
        await page.locator("#question").fill("Something new?")
        await page.get_by_role("button", name="Research").click(no_wait_after=True)
        await expect(page.locator("#form-error")).to_contain_text("this is a replay server")
    finally:
        await server.close()


def _every_kind_of_progress(path: Path) -> str:
    """Write a recording holding every optional kind of `phase` event; return its run id."""
    run_id = "00000000000000ab"
    one = {"id": 1, "title": "One", "url": "https://one.example/a"}
    two = {"id": 2, "title": "Two", "url": "https://two.example/b"}
    three = {"id": 3, "title": "Three", "url": "https://three.example/c"}
    search = {"phase": "searching", "status": "progress"}
    events: list[tuple[str, dict[str, Any]]] = [
        ("phase", {"phase": "planning", "status": "started"}),
        (
            "phase",
            {
                "phase": "planning",
                "status": "completed",
                "queries": ["first", "second"],
                "fallback": "the plan was not JSON",
            },
        ),
        ("phase", {"phase": "searching", "status": "started", "total": 2, "round": 1}),
        (
            "phase",
            {
                **search,
                "query": "first",
                "round": 1,
                "completed": 1,
                "total": 2,
                "sources": [one, two],
            },
        ),
        (
            "phase",
            {
                **search,
                "query": "second",
                "round": 1,
                "completed": 2,
                "total": 2,
                "error": "timed out after 10 s",
            },
        ),
        ("phase", {**search, "round": 2, "queries": ["follow-up"]}),
        (
            "phase",
            {
                **search,
                "query": "follow-up",
                "round": 2,
                "completed": 1,
                "total": 1,
                "sources": [three],
            },
        ),
        ("phase", {**search, "round": 3, "error": "the follow-up plan was empty"}),
        ("phase", {**search, "page": {"id": 1, "url": one["url"], "chars": 12345}}),
        (
            "phase",
            {
                **search,
                "page": {
                    "id": 2,
                    "url": two["url"],
                    "error": {"code": "too_large", "message": "larger than 2 MB"},
                },
            },
        ),
        (
            "phase",
            {"phase": "searching", "status": "completed", "sources": 3, "rounds": 2, "pages": 1},
        ),
        ("phase", {"phase": "synthesizing", "status": "started", "sources": 3}),
        ("token", {"text": "Short [1][3]"}),
        ("phase", {"phase": "synthesizing", "status": "completed", "truncated": True}),
        (
            "done",
            {
                "status": "completed",
                "answer": "Short [1][3]",
                "sources": [one, two, three],
                "timings_ms": {"planning": 5, "searching": 40, "synthesizing": 1500, "total": 1545},
                "error": None,
                "truncated": True,
                "usage": {
                    "prompt_tokens": 1200,
                    "completion_tokens": 5,
                    "by_stage": {},
                    "estimated": False,
                    "budget": 5,
                },
            },
        ),
    ]
    header = {
        "format": "research-service-recording",
        "version": 1,
        "run_id": run_id,
        "question": "Every kind?",
        "options": {"breadth": 2, "max_sources": 8, "depth": 3},
        "created_at": "2026-11-26T10:00:00.000Z",
        "service_version": "0.1.0",
    }
    lines = [header]
    for seq, (name, data) in enumerate(events, start=1):
        timed = {**data, "elapsed_ms": seq * 5} if name == "phase" else data
        lines.append({"seq": seq, "event": name, "data": timed, "t_ms": seq * 5})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return run_id


async def test_rounds_failed_queries_page_reads_and_truncation_are_shown(
    panel: Panel, tmp_path: Path
) -> None:
    recording = tmp_path / "every-kind.jsonl"
    run_id = _every_kind_of_progress(recording)
    settings = Settings(data_dir=tmp_path / "data", retry_ms=50)
    server = TestServer(replay_app(settings, load_recordings([recording]), speed=INSTANT))
    await server.start_server()
    page = panel.page
    try:
        await page.goto(str(server.make_url(f"/?run={run_id}")))
        await expect_finished(page)
        steps = page.locator(".step-detail")
        await expect(steps).to_have_text(
            [
                "Searching the question itself (the plan was not JSON)",
                "3 sources kept from 2 rounds · 1 page read",
                "Stopped at the token budget",
            ]
        )
        await expect(page.locator(".round-title")).to_have_text(
            ["Round 1 · planned", "Round 2 · follow-ups", "Round 3 · follow-ups"]
        )
        await expect(page.locator(".query-status")).to_have_text(
            ["2 new sources", "Failed: timed out after 10 s", "1 new source"]
        )
        await expect(page.locator(".round-note")).to_have_text(
            "None planned: the follow-up plan was empty"
        )
        await expect(page.locator("#source-1 .source-page")).to_have_text(
            "Page read · 12,345 characters"
        )
        await expect(page.locator("#source-2 .source-page")).to_have_text(
            "Page not read: larger than 2 MB"
        )
        await expect(page.locator("#source-3 .source-page")).to_have_count(0)
        await expect(page.locator("#answer a.cite")).to_have_text(["[1]", "[3]"])
        await expect(page.locator(".summary-note")).to_contain_text("token budget ran out")
        await expect(page.locator("#summary-usage dd")).to_have_text(["1,200", "5", "5"])
        await expect(page.locator("#summary-timings dd")).to_have_text(
            ["5 ms", "40 ms", "1.5 s", "1.5 s"]
        )
    finally:
        await server.close()
