"""The web panel with --auth keys in headless Chromium: sign in, the session cookie, share links
between keys, sign out, and a session that ends mid-run."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeoutError

from research_service.providers.base import SearchHit
from tests import browser as fixtures
from tests.browser import DESKTOP, LOOP, Panel
from tests.conftest import MakeService, Service

#: How long the refused call's click is tried (the form may have come back already).
CLICK_TIMEOUT_MS = 3000

pytestmark = LOOP
# The browser fixtures (tests/browser.py), made visible to pytest in this module.
browser = fixtures.browser
make_service = fixtures.make_service
panel = fixtures.panel

FAST = {"retry_ms": 50}
COOKIE = "research_session"
HITS = {
    "alpha": [
        SearchHit("Alpha guide", "https://alpha.example/guide", "All about alpha."),
        SearchHit("Alpha reference", "https://docs.example/alpha", "Alpha, in detail."),
    ],
    "beta": [SearchHit("Beta notes", "https://beta.example/notes", "Beta, briefly.")],
}
PIECES = ["Alpha comes first ", "[1]", " and beta follows ", "[2, 3]", "."]
NOT_YOURS = "was not found, or it is not yours"
SESSION_ENDED = "Your session ended"
# Every EventSource the page opens, so a test can tell that the panel closed its stream.
RECORD_STREAMS = """
window.__streams = [];
const NativeEventSource = window.EventSource;
window.EventSource = class extends NativeEventSource {
  constructor(...args) { super(...args); window.__streams.push(this); }
};
"""
ALL_STREAMS_CLOSED = (
    "window.__streams.length > 0"
    " && window.__streams.every(s => s.readyState === EventSource.CLOSED)"
)


class Keys:
    """A keys file with two keys, alice and bob; `revoke` rewrites it without one of them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.secrets = {name: secrets.token_urlsafe(32) for name in ("alice", "bob")}
        self.write(*self.secrets)

    def write(self, *names: str) -> None:
        lines = [f"{name}:{self.secrets[name]}" for name in names]
        self.path.write_text("# test keys\n" + "\n".join(lines) + "\n", encoding="utf-8")
        # The service reloads the file when its mtime changes: make sure it does.
        stat = self.path.stat()
        os.utime(self.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    def revoke(self, name: str) -> None:
        self.write(*(other for other in self.secrets if other != name))

    def __getitem__(self, name: str) -> str:
        return self.secrets[name]


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "api-keys.txt")


async def keyed_service(make_service: MakeService, keys: Keys) -> Service:
    service = await make_service(auth="keys", api_keys_file=keys.path, **FAST)
    service.llm.queries = ["alpha", "beta"]
    service.llm.pieces = PIECES
    service.search.results.update(HITS)
    return service


@pytest_asyncio.fixture(loop_scope="session")
async def other_panel(browser: Browser) -> AsyncIterator[Panel]:
    """A second browser (its own cookies): another person at another screen."""
    context = await browser.new_context(viewport=DESKTOP, color_scheme="light")
    context.set_default_timeout(10_000)
    watched = Panel(await context.new_page())
    watched.watch()
    yield watched
    await context.close()
    assert watched.errors == [], "the panel logged errors"


async def expect_sign_in_form(page: Page) -> None:
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.get_by_label("API key")).to_have_attribute("type", "password")
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await expect(page.locator("#ask")).to_be_hidden()
    await expect(page.locator("#run")).to_be_hidden()
    await expect(page.locator("#account")).to_be_hidden()


async def sign_in(page: Page, key: str, name: str) -> None:
    """Sign in with the form and wait for the panel to show `name` as signed in."""
    await page.get_by_label("API key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#account")).to_contain_text(f"Signed in as {name}")
    await expect(page.locator("#signin")).to_be_hidden()
    await expect(page.locator("#ask")).to_be_visible()
    await expect(page.get_by_label("API key")).to_have_value("")


async def ask(page: Page, question: str) -> str:
    """Ask `question` in the panel on show; return the new run's id."""
    await page.locator("#question").fill(question)
    await page.get_by_role("button", name="Research").click(no_wait_after=True)
    await expect(page).to_have_url(re.compile(r"/\?run=[0-9a-f]{16}$"))
    return page.url.rsplit("=", 1)[1]


async def expect_answered(page: Page, status: str = "Completed") -> None:
    """The run on show finished with the scripted answer and its three sources."""
    await expect(page.locator("#summary .badge")).to_have_text(status)
    await expect(page.locator("#answer")).to_have_js_property("textContent", "".join(PIECES))
    await expect(page.locator("#sources .source-title")).to_have_text(
        [f"{hit.title} (opens in a new tab)" for hit in (*HITS["alpha"], *HITS["beta"])]
    )
    await expect(page.locator("#answer a.cite")).to_have_count(3)


async def status_of(page: Page, service: Service, path: str) -> int:
    """The status the API answers `path` with, sent with the page's cookies."""
    response = await page.request.get(service.url(path))
    return response.status


async def test_the_right_key_signs_in_and_a_question_runs_to_its_answer(
    panel: Panel, make_service: MakeService, keys: Keys
) -> None:
    service = await keyed_service(make_service, keys)
    page = panel.page
    await page.goto(service.url("/"))
    await expect_sign_in_form(page)
    await expect(page.get_by_label("API key")).to_be_focused()
    assert await status_of(page, service, "/v1/runs") == 401

    refused = await page.request.post(service.url("/v1/session"), data={"api_key": "x" * 40})
    assert refused.status == 401
    detail = (await refused.json())["detail"]
    await page.get_by_label("API key").fill("x" * 40)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#signin-error")).to_have_text(detail)
    await expect(page.get_by_label("API key")).to_have_value("")
    await expect(page.locator("#ask")).to_be_hidden()

    await sign_in(page, keys["alice"], "alice")
    await expect(page.locator("#signin-error")).to_be_hidden()
    await expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    await expect(page.locator("#question")).to_be_focused()
    run_id = await ask(page, "How do alpha and beta relate?")
    await expect_answered(page)
    run = await (await page.request.get(service.url(f"/v1/runs/{run_id}"))).json()
    assert run["status"] == "completed"

    # The session is a cookie the page's scripts cannot read, sent to this site only.
    cookies = [c for c in await page.context.cookies() if c["name"] == COOKIE]
    assert len(cookies) == 1, await page.context.cookies()
    assert cookies[0]["httpOnly"] is True
    assert cookies[0]["sameSite"] == "Strict"
    assert cookies[0]["path"] == "/"
    assert keys["alice"] not in cookies[0]["value"]
    kept: dict[str, Any] = await page.evaluate(
        "({cookie: document.cookie, local: {...localStorage}, session: {...sessionStorage}})"
    )
    assert COOKIE not in kept["cookie"]
    assert kept["local"] == {}
    assert kept["session"] == {}
    assert keys["alice"] not in await page.content()

    # The "Signed in as" line fits a phone's width too.
    await page.set_viewport_size({"width": 360, "height": 740})
    await expect(page.locator("#account")).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 360


async def test_a_session_survives_a_reload_and_a_run_is_its_owners_only(
    panel: Panel, other_panel: Panel, make_service: MakeService, keys: Keys
) -> None:
    service = await keyed_service(make_service, keys)
    page = panel.page
    await page.goto(service.url("/"))
    await sign_in(page, keys["alice"], "alice")
    run_id = await ask(page, "Whose run is this?")
    await expect_answered(page)

    await page.reload()
    await expect(page.locator("#account")).to_contain_text("Signed in as alice")
    await expect(page.locator("#signin")).to_be_hidden()
    await expect(page.locator("#run-question")).to_have_text("Whose run is this?")
    await expect_answered(page)

    # Another browser opens the link: the sign-in form, and no run is asked for before it.
    other = other_panel.page
    asked: list[str] = []
    other.on("request", lambda request: asked.append(request.url))
    link = service.url(f"/?run={run_id}")
    await other.goto(link)
    await expect_sign_in_form(other)
    assert [url for url in asked if "/v1/runs" in url] == []

    # Signed in as bob, alice's run is "not found, or not yours", and nothing of it shows.
    await sign_in(other, keys["bob"], "bob")
    error = other.locator("#form-error")
    await expect(error).to_contain_text(f"Run {run_id} {NOT_YOURS}")
    await expect(other.locator("#run")).to_be_hidden()
    await expect(other.locator("#question")).to_have_value("")
    assert await status_of(other, service, f"/v1/runs/{run_id}") == 404

    # Signed out and in again as alice there, the same link attaches to her run.
    await other.get_by_role("button", name="Sign out").click()
    await expect_sign_in_form(other)
    await other.goto(link)
    await expect_sign_in_form(other)
    await sign_in(other, keys["alice"], "alice")
    await expect(other.locator("#run-question")).to_have_text("Whose run is this?")
    await expect_answered(other)
    await expect(other.locator("#form-error")).to_be_hidden()


async def test_signing_out_closes_the_stream_and_the_api_then_refuses(
    panel: Panel, make_service: MakeService, keys: Keys
) -> None:
    service = await keyed_service(make_service, keys)
    service.llm.hold_after = 2
    page = panel.page
    await page.add_init_script(RECORD_STREAMS)
    await page.goto(service.url("/"))
    await sign_in(page, keys["alice"], "alice")
    run_id = await ask(page, "Can I sign out mid-run?")
    await service.until_held()
    await expect(page.locator("#answer")).to_have_js_property("textContent", "".join(PIECES[:2]))

    await page.get_by_role("button", name="Sign out").click()
    await expect_sign_in_form(page)
    await expect(page.get_by_label("API key")).to_be_focused()
    await expect(page.locator("#signin-error")).to_be_hidden()
    await page.wait_for_function(ALL_STREAMS_CLOSED)
    # The run and its address stay behind for the next person at this screen to see nothing.
    await expect(page).to_have_url(service.url("/"))
    await expect(page.locator("#answer")).to_have_js_property("textContent", "")
    await expect(page.locator("#question")).to_have_value("")
    assert [c for c in await page.context.cookies() if c["name"] == COOKIE] == []
    assert await status_of(page, service, "/v1/session") == 401
    assert await status_of(page, service, f"/v1/runs/{run_id}") == 401
    service.llm.release.set()
    await service.wait_done(run_id)

    await page.reload()
    await expect_sign_in_form(page)


async def test_a_refused_call_brings_the_form_back_and_signing_in_resumes_the_run(
    panel: Panel, make_service: MakeService, keys: Keys
) -> None:
    """A 401 on a call (here the session cookie is gone) ends the session on the page."""
    service = await keyed_service(make_service, keys)
    service.llm.hold_after = 2
    page = panel.page
    await page.add_init_script(RECORD_STREAMS)
    await page.goto(service.url("/"))
    await sign_in(page, keys["alice"], "alice")
    run_id = await ask(page, "What if the session goes?")
    await service.until_held()
    await page.context.clear_cookies()
    # The refused call. The stream's own reconnect may be refused first and bring the form
    # back before Cancel can be clicked: the page must end up signed out either way.
    with contextlib.suppress(PlaywrightTimeoutError):
        await page.get_by_role("button", name="Cancel").click(timeout=CLICK_TIMEOUT_MS)
    await expect_sign_in_form(page)
    await expect(page.locator("#signin-error")).to_contain_text(SESSION_ENDED)
    await page.wait_for_function(ALL_STREAMS_CLOSED)
    assert (await service.manager.state(run_id)).status == "running"

    # The address still links the run: signing in again picks it up, and Cancel works.
    await expect(page).to_have_url(service.url(f"/?run={run_id}"))
    await sign_in(page, keys["alice"], "alice")
    await expect(page.locator("#signin-error")).to_be_hidden()
    await expect(page.locator("#run-question")).to_have_text("What if the session goes?")
    await expect(page.locator("#answer")).to_have_js_property("textContent", "".join(PIECES[:2]))
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.locator("#summary .badge")).to_have_text("Cancelled")


async def test_a_revoked_key_ends_the_session_while_a_run_streams(
    panel: Panel, make_service: MakeService, keys: Keys
) -> None:
    """The service cuts the revoked key's stream; the panel finds out why and says so."""
    service = await keyed_service(make_service, keys)
    service.llm.hold_after = 2
    page = panel.page
    await page.add_init_script(RECORD_STREAMS)
    await page.goto(service.url("/"))
    await sign_in(page, keys["alice"], "alice")
    run_id = await ask(page, "What if my key is revoked?")
    await service.until_held()
    await expect(page.locator("#answer")).to_have_js_property("textContent", "".join(PIECES[:2]))

    keys.revoke("alice")
    await expect_sign_in_form(page)
    await expect(page.locator("#signin-error")).to_contain_text(SESSION_ENDED)
    await page.wait_for_function(ALL_STREAMS_CLOSED)
    assert await status_of(page, service, f"/v1/runs/{run_id}") == 401

    await page.get_by_label("API key").fill(keys["alice"])
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#signin-error")).to_be_visible()
    await expect(page.locator("#signin-error")).not_to_contain_text(SESSION_ENDED)
    await expect(page.locator("#ask")).to_be_hidden()
    service.llm.release.set()


async def test_with_auth_off_the_panel_asks_for_no_key(
    panel: Panel, make_service: MakeService
) -> None:
    service = await make_service(**FAST)
    page = panel.page
    await page.goto(service.url("/"))
    await expect(page.locator("#question")).to_be_focused()
    await expect(page.locator("#ask")).to_be_visible()
    await expect(page.locator("#signin")).to_be_hidden()
    await expect(page.locator("#account")).to_be_hidden()
    session = await page.request.get(service.url("/v1/session"))
    assert await session.json() == {"auth": "off"}
