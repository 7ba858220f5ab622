"""Plan review in the web panel: headless Chromium against the real service (builtin model,
local search over tests/data/corpus): approve, edit, re-plan, two viewers, the keyboard, a 409."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from playwright.async_api import Browser, Page, Route, expect

from research_service.app import create_app
from research_service.settings import Settings
from tests import browser as fixtures
from tests.browser import DESKTOP, LOOP, Panel
from tests.conftest import ServiceTestServer
from tests.served import CORPUS

pytestmark = LOOP
# The browser fixtures (tests/browser.py), made visible to pytest in this module.
browser = fixtures.browser
panel = fixtures.panel

#: The builtin model plans one query for this question, three for the other.
QUESTION = "How does photosynthesis work?"
WIDE_QUESTION = "How do chlorophyll and sunlight drive photosynthesis in plants?"
WIDE_PLAN = [
    "chlorophyll sunlight drive photosynthesis plants",
    "chlorophyll sunlight",
    "chlorophyll drive",
]
REVIEW_TIMEOUT_S = 60
#: The countdown right after the card appears (the snapshot may say a second less).
FRESH_COUNTDOWN = re.compile(r"^Time left to decide: (1:00|0:5\d)$")
NOT_AWAITED = (
    "The plan no longer waits for a review: another reviewer decided first, or the time to "
    "decide ran out. The run's progress shows what it does now."
)


@dataclass
class Reviewing:
    """A research-service with the builtin model and the test corpus, on a loopback port."""

    server: ServiceTestServer

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))


StartService = Callable[..., Awaitable[Reviewing]]


@pytest_asyncio.fixture(loop_scope="session")
async def start_service(tmp_path: Path) -> AsyncIterator[StartService]:
    """Start services on demand (`start(**settings)`); close them all on exit."""
    servers: list[ServiceTestServer] = []

    async def start(**overrides: Any) -> Reviewing:
        settings = Settings(
            data_dir=tmp_path / "data",
            store="memory",
            corpus=CORPUS,
            **{
                "token_delay_ms": 5,
                "retry_ms": 50,
                "review_timeout_s": REVIEW_TIMEOUT_S,
                **overrides,
            },
        )
        server = ServiceTestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return Reviewing(server)

    try:
        yield start
    finally:
        for server in servers:
            await server.close()


async def ask_with_review(page: Page, service: Reviewing, question: str = QUESTION) -> str:
    """Open the panel, ask `question` with the review box ticked; the new run's id."""
    await page.goto(service.url("/"))
    await page.locator("#question").fill(question)
    await page.get_by_label("Review the plan before searching").check()
    await page.get_by_role("button", name="Research").click(no_wait_after=True)
    await expect(page).to_have_url(re.compile(r"/\?run=[0-9a-f]{16}$"))
    return page.url.rsplit("=", 1)[1]


async def shown_queries(page: Page) -> list[str]:
    """The queries in the review card's fields, in order."""
    values: list[str] = await page.locator("#review-queries input").evaluate_all(
        "inputs => inputs.map(input => input.value)"
    )
    return values


async def expect_review(page: Page, queries: list[str], title: str = "Review the plan") -> None:
    """The review card is on show, focused, with these queries."""
    card = page.locator("#review")
    await expect(card).to_be_visible()
    await expect(card.locator("#review-title")).to_have_text(title)
    await expect(card.locator("#review-queries input")).to_have_count(len(queries))
    assert await shown_queries(page) == queries
    await expect(card).to_be_focused()


async def snapshot(page: Page, service: Reviewing, run_id: str) -> dict[str, Any]:
    response = await page.request.get(service.url(f"/v1/runs/{run_id}"))
    assert response.ok
    body: dict[str, Any] = await response.json()
    return body


async def expect_completed(page: Page) -> None:
    await expect(page.locator("#summary .badge")).to_have_text("Completed", timeout=20_000)


async def approve_capturing(page: Page) -> Any:
    """Click Approve; the JSON body the panel sent to the plan endpoint."""
    async with page.expect_request(lambda r: r.url.endswith("/plan")) as sent:
        await page.get_by_role("button", name="Approve").click()
    return (await sent.value).post_data_json


async def test_approving_the_plan_unchanged_sends_an_empty_decision(
    panel: Panel, start_service: StartService
) -> None:
    service = await start_service()
    page = panel.page
    run_id = await ask_with_review(page, service)
    await expect_review(page, ["photosynthesis"])
    await expect(page.locator("#review-countdown")).to_have_text(FRESH_COUNTDOWN)
    await expect(page.locator("#step-planning .step-detail")).to_have_text(
        "Waiting for a review of the plan"
    )
    await expect(page.locator("#status")).to_have_text(
        "The plan is ready for review: 1 query. The run waits for a decision."
    )
    run = await snapshot(page, service, run_id)
    assert run["awaiting"] == "plan_review"
    assert run["options"]["review_plan"] is True

    assert await approve_capturing(page) == {"round": 1}
    await expect(page.locator("#review")).to_be_hidden()
    await expect(page.locator("#review-outcome")).to_have_text("You approved the plan.")
    await expect(page.locator("#step-planning .step-detail")).to_have_text("Plan approved: 1 query")
    await expect_completed(page)
    run = await snapshot(page, service, run_id)
    assert (run["awaiting"], run["review"], run["plan"]) == (None, None, ["photosynthesis"])


async def test_an_edited_plan_runs_exactly_the_edited_queries(
    panel: Panel, start_service: StartService
) -> None:
    service = await start_service()
    page = panel.page
    run_id = await ask_with_review(page, service, WIDE_QUESTION)
    await expect_review(page, WIDE_PLAN)

    await page.get_by_role("button", name="Remove query 2").click()
    # Focus stays in the list: on the query that took the removed one's place.
    await expect(page.get_by_role("textbox", name="Query 2")).to_be_focused()
    assert await shown_queries(page) == [WIDE_PLAN[0], WIDE_PLAN[2]]
    await page.get_by_role("button", name="Add a query").click()
    added = page.get_by_role("textbox", name="Query 3")
    await expect(added).to_be_focused()
    await added.fill("  light reactions  ")
    edited = [WIDE_PLAN[0], WIDE_PLAN[2], "light reactions"]

    assert await approve_capturing(page) == {"queries": edited, "round": 1}
    await expect(page.locator("#review-outcome")).to_have_text("You edited the plan.")
    await expect(page.locator("#step-planning .step-detail")).to_have_text("Plan edited: 3 queries")
    await expect(page.locator("#queries .query-text")).to_have_text(edited)
    await expect_completed(page)
    assert (await snapshot(page, service, run_id))["plan"] == edited


async def test_feedback_brings_a_second_round_that_can_be_approved(
    panel: Panel, start_service: StartService
) -> None:
    service = await start_service()
    page = panel.page
    run_id = await ask_with_review(page, service)
    await expect_review(page, ["photosynthesis"])

    # Sending no feedback is refused by the panel itself, with a reason.
    await page.get_by_role("button", name="Re-plan with feedback").click()
    await expect(page.locator("#review-error")).to_have_text(
        "Write what the new plan should do differently first."
    )
    await expect(page.get_by_label("Feedback for a new plan")).to_be_focused()
    await page.get_by_label("Feedback for a new plan").fill("focus on chlorophyll")
    async with page.expect_request(lambda r: r.url.endswith("/plan")) as sent:
        await page.get_by_role("button", name="Re-plan with feedback").click()
    assert (await sent.value).post_data_json == {"feedback": "focus on chlorophyll", "round": 1}

    await expect_review(page, ["chlorophyll photosynthesis"], "Review the new plan (round 2)")
    await expect(page.locator("#review-error")).to_be_hidden()
    await expect(page.locator("#review-outcome")).to_be_hidden()
    await expect(page.locator("#step-planning .step-detail")).to_have_text(
        "Waiting for a review of the new plan (round 2)"
    )
    assert (await snapshot(page, service, run_id))["review"]["round"] == 2
    assert await approve_capturing(page) == {"round": 2}
    await expect(page.locator("#review-outcome")).to_have_text("You approved the plan.")
    await expect_completed(page)
    await expect(page.locator("#queries .query-text")).to_have_text(["chlorophyll photosynthesis"])


async def test_another_viewer_sees_the_decision_arrive(
    panel: Panel, browser: Browser, start_service: StartService
) -> None:
    service = await start_service()
    page = panel.page
    run_id = await ask_with_review(page, service)
    await expect_review(page, ["photosynthesis"])

    context = await browser.new_context(viewport=DESKTOP)
    other = Panel(await context.new_page())
    other.watch()
    try:
        # The viewer who joins later sees the same plan, with the time the run has left.
        await other.page.goto(service.url(f"/?run={run_id}"))
        await expect_review(other.page, ["photosynthesis"])
        await expect(other.page.locator("#review-countdown")).to_have_text(FRESH_COUNTDOWN)

        await page.get_by_role("button", name="Approve").click()
        await expect(page.locator("#review-outcome")).to_have_text("You approved the plan.")
        await expect(other.page.locator("#review")).to_be_hidden()
        await expect(other.page.locator("#review-outcome")).to_have_text(
            "Plan approved by a reviewer."
        )
        await expect(other.page.locator("#step-planning .step-detail")).to_have_text(
            "Plan approved: 1 query"
        )
        await expect_completed(other.page)
        await expect_completed(page)
    finally:
        await context.close()
    assert other.errors == [], "the second viewer's panel logged errors"


async def test_the_plan_can_be_approved_with_the_keyboard_only(
    panel: Panel, start_service: StartService
) -> None:
    service = await start_service()
    page = panel.page
    await page.goto(service.url("/"))
    await expect(page.locator("#question")).to_be_focused()
    await page.keyboard.type(QUESTION)
    review_box = page.get_by_label("Review the plan before searching")
    for _ in range(4):
        await page.keyboard.press("Tab")
        if await review_box.evaluate("box => box === document.activeElement"):
            break
    await expect(review_box).to_be_focused()
    await page.keyboard.press("Space")
    await expect(review_box).to_be_checked()
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Research")).to_be_focused()
    await page.keyboard.press("Enter")

    # The card takes the focus; Tab walks its query, Remove, Add, then Approve.
    await expect_review(page, ["photosynthesis"])
    order = ["Query 1", "Remove query 1", "Add a query", "Approve"]
    for name in order:
        await page.keyboard.press("Tab")
        focused = await page.evaluate(
            "(document.activeElement.labels?.[0]?.textContent"
            " || document.activeElement.getAttribute('aria-label')"
            " || document.activeElement.textContent).trim()"
        )
        assert focused == name
    await page.keyboard.press("Enter")
    outcome = page.locator("#review-outcome")
    await expect(outcome).to_have_text("You approved the plan.")
    await expect(outcome).to_be_focused()
    await expect_completed(page)


async def hold_the_stream_after_review(route: Route) -> None:
    """Answer the panel's stream with the run's events up to its plan review, then end it and
    ask for a reconnect only in an hour: the page hears of no later decision."""
    async with (
        httpx.AsyncClient(timeout=10.0) as http,
        http.stream("GET", route.request.url) as response,
    ):
        text = ""
        async for chunk in response.aiter_text():
            text += chunk
            review = text.find('"status":"review"')
            if review != -1 and "\n\n" in text[review:]:
                text = text[: text.index("\n\n", review) + 2]
                break
    await route.fulfill(
        status=200,
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        body=text + "retry: 3600000\n\n",
    )


async def test_a_decision_that_came_too_late_is_news_not_an_error(
    panel: Panel, start_service: StartService
) -> None:
    """Someone else decided while this page's stream was slow: Approve answers 409."""
    service = await start_service()
    page = panel.page
    await page.route(re.compile(r"/events(\?|$)"), hold_the_stream_after_review, times=1)
    run_id = await ask_with_review(page, service)
    await expect_review(page, ["photosynthesis"])

    decided = await page.request.post(service.url(f"/v1/runs/{run_id}/plan"), data={})
    assert decided.status == 202
    async with page.expect_response(lambda r: r.url.endswith("/plan")) as answered:
        await page.get_by_role("button", name="Approve").click()
    assert (await answered.value).status == 409
    await expect(page.locator("#review")).to_be_hidden()
    outcome = page.locator("#review-outcome")
    await expect(outcome).to_have_text(NOT_AWAITED)
    await expect(outcome).to_be_focused()
    await expect(page.locator("#status")).to_have_text(NOT_AWAITED)
    await expect(page.locator("#review-error")).to_be_hidden()
    await expect(page.locator("#form-error")).to_be_hidden()


async def test_a_review_that_times_out_goes_on_with_the_proposed_plan(
    panel: Panel, start_service: StartService
) -> None:
    service = await start_service(review_timeout_s=1.0)
    page = panel.page
    run_id = await ask_with_review(page, service)
    await expect(page.locator("#review")).to_be_visible()
    await expect(page.locator("#step-planning .step-detail")).to_have_text(
        "Review timed out: went on with the proposed plan (1 query)"
    )
    await expect(page.locator("#review")).to_be_hidden()
    await expect(page.locator("#review-outcome")).to_have_text(
        "Review timed out: went on with the proposed plan."
    )
    await expect_completed(page)
    assert (await snapshot(page, service, run_id))["plan"] == ["photosynthesis"]


async def test_the_last_round_takes_no_more_feedback(
    panel: Panel, start_service: StartService
) -> None:
    """A viewer following a run re-planned four times (over HTTP) is offered approve or edit."""
    service = await start_service()
    page = panel.page
    created = await page.request.post(
        service.url("/v1/runs"), data={"question": QUESTION, "options": {"review_plan": True}}
    )
    run_id = (await created.json())["id"]
    await page.goto(service.url(f"/?run={run_id}"))
    title = page.locator("#review-title")
    await expect(title).to_have_text("Review the plan")
    for round_number in range(2, 6):
        answer = await page.request.post(
            service.url(f"/v1/runs/{run_id}/plan"), data={"feedback": f"round {round_number}"}
        )
        assert answer.status == 202
        await expect(title).to_have_text(f"Review the new plan (round {round_number})")
    await expect(page.locator("#review-replan")).to_be_hidden()
    await expect(page.locator("#review-last")).to_have_text(
        "This is the last round: approve the plan or edit it."
    )
    assert (await snapshot(page, service, run_id))["review"]["feedback_allowed"] is False
    await page.get_by_role("button", name="Approve").click()
    await expect(page.locator("#review-outcome")).to_have_text("You approved the plan.")
    await expect_completed(page)


async def test_a_signed_in_panel_decides_with_its_session_cookie(
    panel: Panel, start_service: StartService, tmp_path: Path
) -> None:
    """With --auth keys the plan endpoint takes the panel's session, as cancel does."""
    key = secrets.token_urlsafe(32)
    keys = tmp_path / "api-keys.txt"
    keys.write_text(f"alice:{key}\n", encoding="utf-8")
    service = await start_service(auth="keys", api_keys_file=keys)
    page = panel.page
    await page.goto(service.url("/"))
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#account")).to_contain_text("Signed in as alice")
    await page.locator("#question").fill(QUESTION)
    await page.get_by_label("Review the plan before searching").check()
    await page.get_by_role("button", name="Research").click()
    await expect_review(page, ["photosynthesis"])
    async with page.expect_response(lambda r: r.url.endswith("/plan")) as answered:
        await page.get_by_role("button", name="Approve").click()
    assert (await answered.value).status == 202
    await expect(page.locator("#review-outcome")).to_have_text("You approved the plan.")
    await expect_completed(page)


async def test_another_conflict_shows_the_services_words_and_keeps_the_card(
    panel: Panel, start_service: StartService
) -> None:
    """Only a 409 `not-awaiting-review` is news; any other refusal (a replay server's) is shown."""
    service = await start_service()
    page = panel.page
    detail = "this is a replay server: it only serves the recordings it was started with"
    problem = {"type": "https://research-service.dev/problems/replay-only", "status": 409}
    await page.route(
        re.compile(r"/plan$"),
        lambda route: route.fulfill(
            status=409,
            content_type="application/problem+json",
            body=json.dumps({**problem, "title": "Replay only", "detail": detail}),
        ),
    )
    await ask_with_review(page, service)
    await expect_review(page, ["photosynthesis"])
    await page.get_by_role("button", name="Approve").click()
    await expect(page.locator("#review-error")).to_have_text(
        f"Could not send the decision: {detail}"
    )
    await expect(page.locator("#review")).to_be_visible()
    await expect(page.get_by_role("button", name="Approve")).to_be_enabled()
    await expect(page.locator("#review-outcome")).to_be_hidden()
