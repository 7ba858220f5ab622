"""The web panel in headless Chromium under nginx's `/research/` prefix (deploy/nginx/)."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from playwright.async_api import Page, Request, expect

from research_service.providers.base import SearchHit
from tests import browser as fixtures
from tests import nginx
from tests.browser import LOOP, Panel
from tests.conftest import MakeService, Service

pytestmark = LOOP
# The browser fixtures (tests/browser.py), made visible to pytest in this module.
browser = fixtures.browser
make_service = fixtures.make_service
panel = fixtures.panel

COOKIE = "research_session"
PIECES = ["Alpha ", "[1]", " then beta ", "[2]", "."]
HITS = {
    "alpha": [SearchHit("Alpha guide", "https://alpha.example/guide", "All about alpha.")],
    "beta": [SearchHit("Beta notes", "https://beta.example/notes", "Beta, briefly.")],
}


@pytest_asyncio.fixture(loop_scope="session")
async def service(make_service: MakeService) -> Service:
    """The service with two queries, a source each, and an answer citing both."""
    service = await make_service(retry_ms=50)
    service.llm.queries = ["alpha", "beta"]
    service.llm.pieces = PIECES
    service.search.results.update(HITS)
    return service


@pytest_asyncio.fixture(loop_scope="session")
async def proxy(service: Service, tmp_path: Path) -> AsyncIterator[nginx.Nginx]:
    """The example's nginx in front of `service`."""
    assert service.server.port is not None
    async with nginx.running(tmp_path / "nginx", upstream_port=service.server.port) as running:
        yield running


def record_requests(page: Page) -> list[str]:
    """Every URL the page asks for, in order (files, API calls, the event stream)."""
    urls: list[str] = []

    def seen(request: Request) -> None:
        urls.append(request.url)

    page.on("request", seen)
    return urls


async def expect_finished_run(page: Page, question: str) -> None:
    await expect(page.locator("#summary .badge")).to_have_text("Completed")
    await expect(page.locator("#run-question")).to_have_text(question)
    await expect(page.locator("#answer")).to_have_js_property("textContent", "".join(PIECES))
    await expect(page.locator("#answer a.cite")).to_have_count(2)
    await expect(page.locator("#sources .source")).to_have_count(2)
    await expect(page.locator("#sources .source-title")).to_have_text(
        ["Alpha guide (opens in a new tab)", "Beta notes (opens in a new tab)"]
    )


async def test_a_question_runs_to_its_end_under_the_prefix(
    panel: Panel, proxy: nginx.Nginx
) -> None:
    page = panel.page
    requested = record_requests(page)
    home = proxy.url("")
    await page.goto(home)
    await page.locator("#question").fill("How do alpha and beta relate?")
    await page.get_by_role("button", name="Research").click(no_wait_after=True)

    await expect(page).to_have_url(re.compile(rf"^{re.escape(home)}\?run=[0-9a-f]{{16}}$"))
    run_id = page.url.rsplit("=", 1)[1]
    await expect_finished_run(page, "How do alpha and beta relate?")
    await expect(page.locator("#share-link")).to_have_attribute("href", f"/research/?run={run_id}")
    assert f"{home}static/panel.js" in requested
    assert f"{home}v1/runs/{run_id}/events" in requested
    assert [url for url in requested if not url.startswith(home)] == [], "left the prefix"


async def test_a_share_link_works_under_the_prefix_with_or_without_the_slash(
    panel: Panel, proxy: nginx.Nginx, service: Service
) -> None:
    page = panel.page
    created = await page.request.post(proxy.url("v1/runs"), data={"question": "Shared?"})
    assert created.status == 201
    run_id = (await created.json())["id"]
    await service.wait_done(run_id)

    await page.goto(proxy.url(f"?run={run_id}"))
    await expect_finished_run(page, "Shared?")
    await page.locator("#share-link").click()
    await expect(page).to_have_url(proxy.url(f"?run={run_id}"))
    await expect_finished_run(page, "Shared?")

    # Without the slash the proxy redirects, keeping the run.
    await page.goto(f"http://127.0.0.1:{proxy.prefix_port}/research?run={run_id}")
    await expect(page).to_have_url(proxy.url(f"?run={run_id}"))
    await expect_finished_run(page, "Shared?")


async def test_cancel_reaches_the_service_under_the_prefix(
    panel: Panel, proxy: nginx.Nginx, service: Service
) -> None:
    service.llm.hold_after = 1
    page = panel.page
    await page.goto(proxy.url(""))
    await page.locator("#question").fill("Can I stop this?")
    await page.get_by_role("button", name="Research").click(no_wait_after=True)
    await service.until_held()
    await expect(page.locator("#answer")).to_have_js_property("textContent", PIECES[0])
    await page.get_by_role("button", name="Cancel").click(no_wait_after=True)
    await expect(page.locator("#summary .badge")).to_have_text("Cancelled")
    await expect(page.locator("#cancel")).to_be_disabled()


async def test_signed_in_under_the_prefix_the_cookie_stays_in_the_prefix(
    panel: Panel, make_service: MakeService, tmp_path: Path
) -> None:
    """The example rewrites the session cookie's `Path=/` to the prefix (proxy_cookie_path):
    the browser sends it to this service only, and signing in and out work as at the root."""
    key = secrets.token_urlsafe(32)
    keys = tmp_path / "keys"
    keys.write_text(f"alice:{key}\n", encoding="utf-8")
    service = await make_service(auth="keys", api_keys_file=keys, retry_ms=50)
    service.llm.queries = ["alpha", "beta"]
    service.llm.pieces = PIECES
    service.search.results.update(HITS)
    assert service.server.port is not None
    async with nginx.running(tmp_path / "nginx", upstream_port=service.server.port) as proxy:
        page = panel.page
        await page.goto(proxy.url(""))
        await page.get_by_label("API key").fill(key)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#account")).to_contain_text("Signed in as alice")
        cookies = await page.context.cookies()
        assert [(c["name"], c["path"]) for c in cookies] == [(COOKIE, "/research/")]
        # The cookie is not sent outside the prefix: the root of the host is not signed in.
        outside = await page.request.get(proxy.url("v1/session", prefixed=False))
        assert outside.status == 401
        await page.reload()
        await expect(page.locator("#account")).to_contain_text("Signed in as alice")
        await page.locator("#question").fill("How do alpha and beta relate?")
        await page.get_by_role("button", name="Research").click(no_wait_after=True)
        await expect_finished_run(page, "How do alpha and beta relate?")
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_label("API key")).to_be_visible()
        assert await page.context.cookies() == []
