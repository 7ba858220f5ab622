"""Many event streams in one browser tab through the cluster's nginx: HTTP/2 lifts the 6 limit.

A real `research-service serve` (one process, memory store, a slow builtin model so each run
streams for seconds) behind nginx configured from deploy/nginx/research-service-cluster.conf,
with a certificate from deploy/nginx/make-cert.sh; headless Chromium opens one EventSource per
run, ten at once, on one page. Over HTTP/2 all ten stream together. The same nginx without
`http2` (HTTP/1.1 over TLS) shows why it matters: six streams progress, the rest wait for one
of them to end.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from tests import browser as fixtures
from tests import nginx_tls
from tests.browser import LOOP
from tests.loopback import refused_port
from tests.served import CORPUS, Served, start, stop

pytestmark = LOOP
browser = fixtures.browser

STREAMS: Final = 10
#: How many HTTP/1.1 connections Chromium opens to one origin (host and port) at once.
HTTP1_CONNECTIONS_PER_ORIGIN: Final = 6
#: The builtin model's pause between words: a run's answer (about 40 words) streams for ~4 s,
#: long enough that every stream that can connect has its first event before any run ends.
TOKEN_DELAY_MS: Final = "100"
QUESTION: Final = "How does photosynthesis work?"
EVENTS_PATH: Final = re.compile(r"/v1/runs/[0-9a-f]{16}/events")
TIMEOUT_S: Final = 60.0

#: Creates `count` runs, then opens one EventSource per run at once; resolves when every run's
#: `done` has arrived with, per stream, when (ms since the streams opened) its first event and
#: its `done` came, and how many events it had.
OPEN_STREAMS: Final = """
async ({ count, question }) => {
    const runs = [];
    for (let i = 0; i < count; i++) {
        const response = await fetch("/v1/runs", {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ question }),
        });
        if (response.status !== 201) throw new Error(`POST /v1/runs: ${response.status}`);
        runs.push(await response.json());
    }
    const opened = performance.now();
    const streams = runs.map((run) => new Promise((resolve, reject) => {
        const seen = { id: run.id, first: null, done: null, events: 0 };
        const source = new EventSource(run.events_url);
        const count = () => {
            seen.events += 1;
            if (seen.first === null) seen.first = performance.now() - opened;
        };
        source.addEventListener("phase", count);
        source.addEventListener("token", count);
        source.addEventListener("done", () => {
            count();
            seen.done = performance.now() - opened;
            // Closed at once, so the browser does not reconnect and frees the connection.
            source.close();
            resolve(seen);
        });
        source.onerror = () => {
            if (source.readyState === EventSource.CLOSED) reject(new Error(`${run.id} failed`));
        };
    }));
    return Promise.all(streams);
}
"""


@dataclass(frozen=True)
class Stream:
    """One EventSource's timeline, in ms after the streams were opened."""

    id: str
    first: float
    done: float
    events: int


@pytest_asyncio.fixture(loop_scope="session")
async def service(tmp_path: Path) -> AsyncIterator[Served]:
    """`research-service serve` as a process: memory store, slow builtin model, test corpus."""
    served = await start(
        "--store",
        "memory",
        "--corpus",
        str(CORPUS),
        "--token-delay-ms",
        TOKEN_DELAY_MS,
        env={"RESEARCH_PORT": "0", "RESEARCH_DATA_DIR": str(tmp_path / "data")},
    )
    yield served
    if served.process.returncode is None:
        await stop(served)


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A page in a new context that accepts the self-signed certificate."""
    context = await browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(10_000)
    yield await context.new_page()
    await context.close()


async def open_streams(page: Page, proxy: nginx_tls.TlsNginx) -> list[Stream]:
    """Open `STREAMS` runs' streams at once on one page (through `proxy`); their timelines."""
    # A page of the origin without a Content-Security-Policy of its own, to run the script in.
    response = await page.goto(proxy.url("healthz"))
    assert response is not None
    assert response.status == 200
    async with asyncio.timeout(TIMEOUT_S):
        seen: list[dict[str, Any]] = await page.evaluate(
            OPEN_STREAMS, {"count": STREAMS, "question": QUESTION}
        )
    return [Stream(**stream) for stream in seen]


async def protocols_logged(proxy: nginx_tls.TlsNginx) -> set[str]:
    """The protocols nginx logged the `STREAMS` event streams' requests with."""
    lines = await proxy.wait_access(EVENTS_PATH, count=STREAMS)
    return {line["protocol"].decode() for line in lines}


async def test_ten_streams_progress_together_over_http2(
    service: Served, page: Page, tmp_path: Path
) -> None:
    async with nginx_tls.running(tmp_path / "nginx", upstream_port=service.port) as proxy:
        streams = await open_streams(page, proxy)
        navigation = await page.evaluate(
            "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        )
        protocols = await protocols_logged(proxy)

    assert len({stream.id for stream in streams}) == STREAMS
    assert all(stream.events > 1 for stream in streams)
    first_end = min(stream.done for stream in streams)
    late = [stream for stream in streams if stream.first >= first_end]
    assert late == [], f"streams that waited for another to end ({first_end:.0f} ms): {late}"
    assert navigation == "h2"
    assert protocols == {"HTTP/2.0"}


async def test_over_http1_only_six_streams_progress_until_one_ends(
    service: Served, page: Page, tmp_path: Path
) -> None:
    """The same nginx without `http2`: the browser's 7th stream waits for a connection."""
    folder = tmp_path / "nginx"
    async with nginx_tls.running(folder, upstream_port=service.port, http2=False) as proxy:
        streams = await open_streams(page, proxy)
        protocols = await protocols_logged(proxy)

    assert len({stream.id for stream in streams}) == STREAMS
    first_end = min(stream.done for stream in streams)
    progressing = [stream for stream in streams if stream.first < first_end]
    assert len(progressing) == HTTP1_CONNECTIONS_PER_ORIGIN, streams
    assert protocols == {"HTTP/1.1"}


def negotiate(port: int, context: ssl.SSLContext, name: str) -> str | None:
    """TLS to 127.0.0.1:`port` as host `name`: the application protocol nginx picked."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname=name) as tls,
    ):
        return tls.selected_alpn_protocol()


async def test_the_certificate_verifies_for_its_names_and_nginx_offers_http2(
    tmp_path: Path,
) -> None:
    """make-cert.sh's certificate holds for localhost and 127.0.0.1, not others; ALPN picks h2."""
    # No upstream: the TLS handshake is nginx's alone.
    async with nginx_tls.running(tmp_path / "nginx", upstream_port=refused_port()) as proxy:
        context = ssl.create_default_context(cafile=proxy.certificate)
        context.set_alpn_protocols(["h2", "http/1.1"])
        for name in ("localhost", "127.0.0.1"):
            assert await asyncio.to_thread(negotiate, proxy.port, context, name) == "h2", name
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(negotiate, proxy.port, context, "example.com")
