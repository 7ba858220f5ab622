"""Screenshots of the web panel for docs/panel.md, taken from a real run of the service.

`python -m tests.panel_screenshots` starts `research-service serve` on its embedded defaults
(builtin model, local search over the standard library's docs, indexed under the default data
dir), asks one question in the panel the way a user would, and saves the page mid-answer and
finished at desktop width, then the run's share link opened at 360 px.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import sys
from pathlib import Path

from playwright.async_api import ViewportSize, async_playwright, expect

from tests.browser import CHROMIUM, LAUNCH_ARGS

ROOT = Path(__file__).resolve().parent.parent
IMAGES = ROOT / "docs" / "images"
QUESTION = "How do I parse JSON?"
MAX_SOURCES = 5
# Slow enough to catch the answer mid-stream, quick enough for a short script.
TOKEN_DELAY_MS = 40
DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=360, height=740)
READY = re.compile(rb"Running on (http://[^ ]+)")
WAIT_MS = 60_000


async def drain(stream: asyncio.StreamReader) -> None:
    """Read the service's log so it never blocks on a full pipe."""
    while await stream.readline():
        pass


async def shoot(base: str, out: Path) -> None:
    """Ask the question in the panel; save it mid-answer, finished, and at 360 px."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        desktop = await browser.new_context(viewport=DESKTOP, color_scheme="light")
        page = await desktop.new_page()
        await page.goto(base + "/")
        await page.locator("#question").fill(QUESTION)
        await page.locator(".options summary").click()
        await page.get_by_label("Max sources").fill(str(MAX_SOURCES))
        await page.locator(".options summary").click()
        await page.locator("#question").press("Enter")
        await expect(page.locator("#answer")).to_have_text(re.compile(r".{90}"), timeout=WAIT_MS)
        await page.locator("#question").blur()
        await page.screenshot(path=out / "panel-streaming.png", full_page=True)
        await expect(page.locator("#summary")).to_be_visible(timeout=WAIT_MS)
        await page.screenshot(path=out / "panel-finished.png", full_page=True)
        # The address is now the run's share link: open it on a phone-sized screen.
        phone = await browser.new_context(viewport=PHONE, color_scheme="light")
        small = await phone.new_page()
        await small.goto(page.url)
        await expect(small.locator("#summary")).to_be_visible(timeout=WAIT_MS)
        await small.locator("#question").blur()
        await small.screenshot(path=out / "panel-360.png", full_page=True)
        await browser.close()


async def main(argv: list[str] | None = None) -> int:
    """Start the service, take the screenshots, stop the service."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMAGES, help="folder for the PNG files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    # --store memory: no run is kept; the stdlib index under the data dir is reused. --port 0:
    # a port free when it binds, read back from its "Running on" line.
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "research_service", "serve", "--port", "0"),
        *("--store", "memory", "--token-delay-ms", str(TOKEN_DELAY_MS)),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    assert process.stderr is not None
    log = process.stderr
    try:
        async with asyncio.timeout(300):
            while not (ready := READY.search(line := await log.readline())):
                if not line:
                    print("the service did not start", file=sys.stderr)
                    return 1
        drainer = asyncio.create_task(drain(log))
        await shoot(ready.group(1).decode().strip().rstrip("/"), args.out)
    finally:
        process.send_signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                await process.wait()
    await drainer
    print(f"saved panel-streaming.png, panel-finished.png and panel-360.png in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
