"""The three servers the bench compares; each runs alone in its own process.

`python bench/servers.py research|sse|raw --data-dir DIR [--stream FILE] [--exit-on-stdin-eof]`
prints `PORT <n>` once it listens on 127.0.0.1, and serves until SIGTERM or SIGINT (or, with the
flag, until its stdin closes, which is how it follows the bench out). All three speak the same
bench protocol: `POST /v1/runs` answers with an `events_url`; the stream holds before its
first token while the question says `hold=1`, until `POST /bench/start`; `GET /bench/stats`
reports the process's CPU time and RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp_sse import sse_response
from workload import Ask, WireEvent, split_stream, token_pieces

from research_service.app import create_app
from research_service.defaults import DEFAULT_RETRY_MS
from research_service.events import retry_field
from research_service.providers.base import (
    AnswerRequest,
    FollowUpRequest,
    Plan,
    PlanRequest,
    SearchHit,
)
from research_service.settings import Settings
from research_service.web.keys import SETTINGS
from research_service.web.serving import freeze_startup_objects, make_runner
from research_service.web.stream import STREAM_HEADERS

HOST: Final = "127.0.0.1"
KINDS: Final = ("research", "sse", "raw")
RETRY: Final = retry_field(DEFAULT_RETRY_MS)
BENCH_MAX_ACTIVE_RUNS: Final = 256

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Gate:
    """One-shot release: whoever waits now goes on; later waiters wait for the next release."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.waiting = 0

    async def wait(self) -> None:
        """Wait for the next release."""
        self.waiting += 1
        try:
            await self._event.wait()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        """Let every current waiter go on."""
        self._event.set()
        self._event = asyncio.Event()


def rss_kib() -> int:
    """This process's resident set size in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


class LoopLag:
    """How late a 5 ms timer fires: the longest time the event loop was held by anything."""

    PERIOD_S: Final = 0.005

    def __init__(self) -> None:
        self.max_s = 0.0

    async def watch(self) -> None:
        """Measure until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.PERIOD_S
            await asyncio.sleep(self.PERIOD_S)
            self.max_s = max(self.max_s, loop.time() - due)


def add_bench_routes(app: web.Application, gate: Gate) -> None:
    """`GET /bench/stats` (CPU, RSS, tasks, loop lag) and `POST /bench/start` (release held)."""
    lag = LoopLag()

    async def watch_lag(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(lag.watch())
        yield
        task.cancel()

    async def stats(request: web.Request) -> web.Response:
        cpu = time.process_time()  # first, so the rest of this handler is not in the window
        if request.query.get("gc") == "1":
            gc.collect()
        body = {
            "cpu_s": cpu,
            "rss_kib": rss_kib(),
            "tasks": len(asyncio.all_tasks()),
            "held": gate.waiting,
            "lag_max_ms": lag.max_s * 1000,
        }
        if request.query.get("reset_lag") == "1":
            lag.max_s = 0.0
        return web.json_response(body)

    async def start(request: web.Request) -> web.Response:
        released = gate.waiting
        gate.release()
        return web.json_response({"released": released})

    app.router.add_get("/bench/stats", stats)
    app.router.add_post("/bench/start", start)
    app.cleanup_ctx.append(watch_lag)


class BenchLLM:
    """Plans one query; streams the question's number of pieces as fast as the loop allows."""

    name = "bench"

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def plan(self, request: PlanRequest) -> Plan:
        """One query, whatever the question."""
        return Plan(["bench"])

    async def follow_up(self, request: FollowUpRequest) -> list[str]:
        """No follow-up rounds in the bench."""
        return []

    async def synthesize(self, request: AnswerRequest) -> AsyncIterator[str]:
        """Yield the pieces; unless bursting, give the loop one turn per piece."""
        ask = Ask.parse(request.question)
        if ask.hold:
            await self.gate.wait()
        for piece in token_pieces(ask.tokens):
            yield piece
            if not ask.burst:
                await asyncio.sleep(0)


class BenchSearch:
    """One hit for any query."""

    name = "bench"

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """The same single hit every time."""
        return [SearchHit("Bench source", "https://example.org/bench", "A bench snippet.", 1.0)]


def research_app(data_dir: Path, *, store: str = "memory") -> web.Application:
    """research-service itself, with the bench providers and the bench routes."""
    gate = Gate()
    settings = Settings(
        data_dir=data_dir,
        max_active_runs=BENCH_MAX_ACTIVE_RUNS,
        log_level="WARNING",
        # The bench streams far more tokens than any answer; the budget must not cut it.
        max_tokens_per_run=10**9,
        # memory: the stream's own cost; sqlite adds the disk writer (bench/README.md).
        store=store,
    )
    app = create_app(settings, llm=BenchLLM(gate), search=BenchSearch())
    add_bench_routes(app, gate)
    return app


class Script:
    """The captured research-service stream a baseline replays: before, tokens, after."""

    def __init__(self, events: list[WireEvent]) -> None:
        first = next(i for i, e in enumerate(events) if e.event == "token")
        last = max(i for i, e in enumerate(events) if e.event == "token")
        self.before = events[:first]
        self.tokens = events[first : last + 1]
        self.after = events[last + 1 :]
        self.run_id = events[0].id.partition(":")[0]

    def held_part(self, request: web.Request) -> tuple[list[WireEvent], bool]:
        """The events after the hold point for this request, and whether to hold."""
        tokens = int(request.query.get("tokens", len(self.tokens)))
        hold = request.query.get("hold") == "1"
        if tokens > len(self.tokens):
            raise web.HTTPBadRequest(text=f"the captured stream has {len(self.tokens)} tokens")
        return self.tokens[:tokens] + self.after, hold


def baseline_app(kind: str, script: Script) -> web.Application:
    """A bare server streaming the captured bytes: aiohttp-sse `send` or raw `write` loops."""
    gate = Gate()

    async def create_run(request: web.Request) -> web.Response:
        body = await request.json()
        ask = Ask.parse(body["question"])
        url = f"/bench/events?tokens={ask.tokens}&hold={int(ask.hold)}"
        return web.json_response({"id": script.run_id, "events_url": url}, status=201)

    async def raw_events(request: web.Request) -> web.StreamResponse:
        rest, hold = script.held_part(request)
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        await response.write(RETRY)
        for event in script.before:
            await response.write(event.wire)
        if hold:
            await gate.wait()
        for event in rest:
            await response.write(event.wire)
        return response

    async def sse_events(request: web.Request) -> web.StreamResponse:
        rest, hold = script.held_part(request)
        async with sse_response(request, sep="\n") as response:
            await response.write(RETRY)
            for event in script.before:
                await response.send(event.data, id=event.id, event=event.event)
            if hold:
                await gate.wait()
            for event in rest:
                await response.send(event.data, id=event.id, event=event.event)
        return response

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/v1/runs", create_run)
    handler: Handler = raw_events if kind == "raw" else sse_events
    app.router.add_get("/bench/events", handler)
    # As research-service's: the probe the idle-listener step times.
    app.router.add_get("/healthz", healthz)
    add_bench_routes(app, gate)
    return app


async def serve(app: web.Application, *, watch_stdin: bool) -> None:
    """Serve on a free loopback port, print it, and stop cleanly on SIGTERM/SIGINT.

    research-service is served by its own runner (guarded connections, as `serve` does).
    """
    runner: web.AppRunner
    if SETTINGS in app:
        runner = make_runner(app, app[SETTINGS], access_log=None)
    else:
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    if SETTINGS in app:
        freeze_startup_objects()  # as `research-service serve` does
    site = web.TCPSite(runner, HOST, 0, backlog=1024)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if watch_stdin:
        # The bench holds our stdin open; EOF means it is gone, even if it was killed.
        await loop.connect_read_pipe(lambda: _ParentGone(stop), sys.stdin)
    print(f"PORT {port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


class _ParentGone(asyncio.Protocol):
    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: build the requested server and serve it."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--stream", type=Path, help="captured stream (baselines only)")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when stdin closes")
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    args = parser.parse_args(argv)
    if args.kind == "research":
        app = research_app(args.data_dir, store=args.store)
    else:
        if args.stream is None:
            parser.error("baselines need --stream, a captured research-service stream")
        app = baseline_app(args.kind, Script(split_stream(args.stream.read_bytes())))
    asyncio.run(serve(app, watch_stdin=args.exit_on_stdin_eof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
