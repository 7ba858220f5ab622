"""The web panel, in headless Chromium, across a crash of the real `serve` it listens to.

The disk fills mid-run, so the tokens the panel shows from then on never reach the store; the
process is killed and started again on the same port. The panel's stream resumes from the
last event it saw, past the stored log, and is sent the run's ending, whose seqs are ones it
saw on the lost events, or, when its last event has the seq of the stored `done`, a 204
(docs/protocol.md, "After a crash"): either way it shows the run as failed, why, and the
answer the store kept.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import expect

from tests import browser as fixtures
from tests.browser import LOOP, Panel
from tests.full_disk import fill, free, small_disk
from tests.served import CORPUS, Served, start, stop
from tests.test_panel_browser import ask

pytestmark = LOOP
browser = fixtures.browser
panel = fixtures.panel


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk") as mounted:
        yield mounted


async def serve(disk: Path, port: int) -> Served:
    return await start(
        *("--port", str(port), "--data-dir", str(disk / "data"), "--corpus", str(CORPUS)),
        *("--token-delay-ms", "25", "--retry-ms", "100", "--shutdown-grace-s", "2"),
        timeout=60,
    )


async def test_after_a_crash_the_panel_shows_the_runs_ending_and_its_stored_answer(
    panel: Panel, disk: Path
) -> None:
    served = await serve(disk, 0)
    port = served.port  # the restart listens where the panel reconnects
    page = panel.page
    answer = page.locator("#answer")
    try:
        run_id = await ask(page, served.base, "How do leaves work?")
        await expect(answer).not_to_be_empty()
        await fill(disk)  # from here on, what the panel is shown is never stored
        shown = await answer.text_content() or ""
        await expect(answer).not_to_have_text(shown)
    finally:
        assert await stop(served, signal.SIGKILL) == -signal.SIGKILL
    seen = await answer.text_content() or ""
    await free(disk)
    restarted = await serve(disk, port)
    try:
        summary = page.locator("#summary")
        await expect(summary.locator(".badge")).to_have_text("Failed", timeout=30_000)
        async with httpx.AsyncClient() as client:
            stored = (await client.get(f"{restarted.base}/v1/runs/{run_id}")).json()
        assert stored["error"]["code"] == "interrupted"
        await expect(answer).to_have_js_property("textContent", stored["answer"])
        assert len(stored["answer"]) < len(seen)  # the panel had been shown lost text
        failure = page.locator("#run-error")
        await expect(failure).to_contain_text("the service stopped during the run")
    finally:
        assert await stop(restarted) == 0
