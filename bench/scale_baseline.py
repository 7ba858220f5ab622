"""The scale bench's baseline: a bare aiohttp server that plays recorded runs at their own pace.

`python bench/scale_baseline.py --scripts DIR` loads the recordings in DIR (research-service's
runs of the same step), prints `PORT <n>` once it listens on 127.0.0.1, and serves until SIGTERM
or until its stdin closes. `POST /v1/runs` starts the next recording as a run: a task writes
each event at its recorded `t_ms` after the run's creation, the same bytes research-service sent
(only the run id differs), with nothing to compute. `GET /v1/runs/{id}/events` streams it (a
late listener first gets what it missed); `GET /v1/runs/{id}/recording` returns the run with the
`t_ms` at which each event was actually written, so the bench measures both servers one way.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from research_service.events import Event
from research_service.records import iso_time
from research_service.stats import LAG_BUCKETS, Buckets
from research_service.web.stream import STREAM_HEADERS

#: How often the loop-lag probe fires (s), as research-service's (web/metrics.py).
LAG_SAMPLE_S: Final = 0.01

HOST: Final = "127.0.0.1"
RETRY: Final = b"retry: 3000\n\n"
RUNS: web.AppKey[dict[str, Run]] = web.AppKey("runs")


@dataclass(frozen=True, slots=True)
class Script:
    """One recorded run: per event, its wire bytes after `id: <run>`, and its `t_ms`."""

    tails: list[bytes]
    t_ms: list[int]
    done: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> Script:
        """Read a recording (JSON Lines, docs/recordings.md)."""
        lines = [json.loads(line) for line in path.read_text().splitlines() if line]
        header, events = lines[0], lines[1:]
        tails, t_ms = [], []
        prefix = len(f"id: {header['run_id']}")
        for e in events:
            wire = Event.create(header["run_id"], e["seq"], e["event"], e["data"], t_ms=e["t_ms"])
            tails.append(wire.wire[prefix:])
            t_ms.append(int(e["t_ms"]))
        return cls(tails, t_ms, events[-1]["data"])


@dataclass(slots=True)
class Run:
    """A run being played: the events written so far and when, and who waits for more."""

    run_id: str
    script: Script
    created_at: float = field(default_factory=time.time)
    origin: float = field(default_factory=time.monotonic)
    written: list[bytes] = field(default_factory=list)
    actual_ms: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    @property
    def ended(self) -> bool:
        """True once every event was written."""
        return len(self.written) == len(self.script.tails)

    async def play(self) -> None:
        """Write each event at its recorded time after the run's creation."""
        head = f"id: {self.run_id}".encode()
        for tail, t_ms in zip(self.script.tails, self.script.t_ms, strict=True):
            wait = self.origin + t_ms / 1000 - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self.actual_ms.append(int((time.monotonic() - self.origin) * 1000))
            self.written.append(head + tail)
            self.changed.set()
            self.changed = asyncio.Event()


def make_app(scripts: list[Script]) -> web.Application:
    """The baseline's routes over `scripts`, handed out in turn."""
    app = web.Application()
    app[RUNS] = {}
    turns = itertools.cycle(scripts)

    async def create(request: web.Request) -> web.Response:
        await request.read()
        run = Run(secrets.token_hex(8), next(turns))
        run.task = asyncio.create_task(run.play())
        request.app[RUNS][run.run_id] = run
        body = {
            "id": run.run_id,
            "status": "queued",
            "created_at": iso_time(run.created_at),
            "events_url": f"/v1/runs/{run.run_id}/events",
        }
        return web.json_response(body, status=201)

    async def events(request: web.Request) -> web.StreamResponse:
        run = request.app[RUNS][request.match_info["run_id"]]
        response = web.StreamResponse(headers=STREAM_HEADERS)
        await response.prepare(request)
        await response.write(RETRY)
        sent = 0
        while True:
            changed = run.changed
            for wire in run.written[sent:]:
                await response.write(wire)
            sent = len(run.written)
            if run.ended:
                break
            await changed.wait()
        await response.write_eof()
        return response

    async def recording(request: web.Request) -> web.Response:
        run = request.app[RUNS][request.match_info["run_id"]]
        if not run.ended:
            raise web.HTTPConflict(text="the run has not ended")
        lines: list[dict[str, Any]] = [
            {"run_id": run.run_id, "created_at": iso_time(run.created_at)}
        ]
        for seq, t_ms in enumerate(run.actual_ms, start=1):
            lines.append({"seq": seq, "t_ms": t_ms})
        lines[-1]["data"] = run.script.done
        return web.Response(text="".join(json.dumps(line) + "\n" for line in lines))

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_post("/v1/runs", create)
    app.router.add_get("/v1/runs/{run_id}/events", events)
    app.router.add_get("/v1/runs/{run_id}/recording", recording)
    app.router.add_get("/healthz", healthz)
    add_lag_probe(app)
    return app


def add_lag_probe(app: web.Application) -> None:
    """The service's loop-lag probe, the same way (a 10 ms timer, the worst lateness kept, each
    sample in the same histogram buckets) and at the same `GET /metrics` names, so the bench
    reads the bare server's stalls beside it."""
    worst = [0.0]
    lags = Buckets(LAG_BUCKETS)

    async def probe(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        async def sample() -> None:
            while True:
                due = loop.time() + LAG_SAMPLE_S
                await asyncio.sleep(LAG_SAMPLE_S)
                late = loop.time() - due
                worst[0] = max(worst[0], late)
                lags.observe(late)

        task = asyncio.create_task(sample())
        yield
        task.cancel()

    async def metrics(request: web.Request) -> web.Response:
        lines = [
            "# TYPE research_event_loop_lag_max_seconds gauge",
            f"research_event_loop_lag_max_seconds {worst[0]}",
            "# TYPE research_event_loop_lag_seconds histogram",
        ]
        cumulative = lags.cumulative()
        for bound, count in cumulative:
            lines.append(f'research_event_loop_lag_seconds_bucket{{le="{bound}"}} {count}')
        lines.append(f"research_event_loop_lag_seconds_count {cumulative[-1][1]}")
        lines.append(f"research_event_loop_lag_seconds_sum {lags.total}")
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    app.cleanup_ctx.append(probe)
    app.router.add_get("/metrics", metrics)


class _ParentGone(asyncio.Protocol):
    def __init__(self, stop: asyncio.Event) -> None:
        self.stop = stop

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop.set()


async def serve(app: web.Application) -> None:
    """Serve on a free loopback port, print it; stop on SIGTERM/SIGINT or when stdin closes."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, HOST, 0, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await loop.connect_read_pipe(lambda: _ParentGone(stop), sys.stdin)
    print(f"PORT {runner.addresses[0][1]}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Load the recordings and serve them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scripts", type=Path, required=True, help="folder of recordings")
    args = parser.parse_args(argv)
    scripts = [Script.load(path) for path in sorted(args.scripts.glob("*.jsonl"))]
    if not scripts:
        parser.error(f"no recordings (*.jsonl) in {args.scripts}")
    # As research-service does at start-up: no full collection scans the loaded scripts.
    gc.collect()
    gc.freeze()
    asyncio.run(serve(make_app(scripts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
