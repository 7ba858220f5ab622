"""Playwright fixtures for the web panel's tests: one headless Chromium per session, a new
context per test, and the service fixtures in the same event loop as the browser.

The browser and everything a test drives it against must share one asyncio loop. The loop
of a session-wide browser is the session's, so the browser tests run in it (`pytestmark`
below), and `make_service` runs conftest's `service_factory` in that loop too.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, ViewportSize, async_playwright

from tests import conftest
from tests.fakes import ScriptedLLM, ScriptedSearch

CHROMIUM: Final = Path("/usr/bin/chromium")
LAUNCH_ARGS: Final = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP: Final = ViewportSize(width=1280, height=900)
#: Every browser test module runs in the session's loop, the loop the browser lives in.
LOOP: Final = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session", name="make_service")
async def make_service(
    tmp_path: Path, llm: ScriptedLLM, search: ScriptedSearch
) -> AsyncIterator[conftest.MakeService]:
    """conftest's `make_service`, run in the session loop the browser lives in."""
    async with conftest.service_factory(tmp_path, llm, search) as make:
        yield make


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, launched once for the whole session."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing in CI; .ci/run should have installed chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        await launched.close()


@dataclass
class Panel:
    """A fresh page, and what went wrong in it: uncaught errors and CSP refusals."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def watch(self) -> None:
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.errors.append(f"csp: {message.text}")


@pytest_asyncio.fixture(loop_scope="session")
async def panel(browser: Browser) -> AsyncIterator[Panel]:
    """A page in a new browser context; the test fails if the panel threw or CSP refused."""
    context = await browser.new_context(viewport=DESKTOP, color_scheme="light")
    context.set_default_timeout(10_000)
    page = await context.new_page()
    watched = Panel(page)
    watched.watch()
    yield watched
    await context.close()
    assert watched.errors == [], "the panel logged errors"
