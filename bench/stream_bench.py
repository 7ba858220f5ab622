"""Stream benchmark: research-service against a bare aiohttp-sse and a raw aiohttp server.

Each server runs in its own process (pinned to core 0 when there are two cores); this
process is the client (core 1). Figures: server CPU per delivered `token` event (1 and 100
listeners), POST-to-first-`phase` and first-byte latency, idle listener memory. The servers'
measurements are interleaved, so a drift in machine speed hits all three alike.
Run `python bench/stream_bench.py --help`; bench/README.md explains every figure.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import aiohttp
from clients import Control
from harness import (
    SERVER_CPU,
    announce_machine,
    can_pin,
    parse_flags,
    prepare,
    save_json,
)
from measure import CpuFigure, Latencies, capture, idle_memory, latency, live_cpu, replay_cpu
from report import Results, render_table
from workload import Ask

BENCH_DIR: Final = Path(__file__).resolve().parent
SERVERS_PY: Final = BENCH_DIR / "servers.py"
KINDS: Final = ("research", "sse", "raw")
BASELINES: Final = ("sse", "raw")
TOTAL_TIMEOUT_S: Final = 600.0
START_TIMEOUT_S: Final = 30.0
STOP_TIMEOUT_S: Final = 10.0
LATENCY_ROUNDS: Final = 3


@dataclass(frozen=True, slots=True)
class Params:
    """How big each measurement is."""

    tokens: int
    fanout_tokens: int
    fanout: int
    repeat: int
    fanout_repeat: int
    latency_runs: int
    idle: int
    #: How long `GET /healthz` is probed while the idle listeners are held (s).
    idle_probe_s: float
    pin: bool = True
    store: str = "memory"


# 10,000 idle listeners (issue 16), probed for longer than the 15 s heartbeat interval.
FULL: Final = Params(20_000, 5_000, 100, 5, 2, 300, 10_000, 16.0)
QUICK: Final = Params(2_000, 500, 100, 1, 1, 30, 200, 1.0)


@asynccontextmanager
async def server(
    kind: str, workdir: Path, *, stream: Path | None, pin: bool, store: str
) -> AsyncIterator[int]:
    """Run one bench server in its own process; yields its port, stops it on exit."""
    data_dir = workdir / f"data-{kind}"
    data_dir.mkdir(exist_ok=True)
    args = [str(SERVERS_PY), kind, "--data-dir", str(data_dir), "--exit-on-stdin-eof"]
    if stream is not None:
        args += ["--stream", str(stream)]
    if kind == "research":
        args += ["--store", store]
    log_path = workdir / f"{kind}.log"
    with log_path.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT_S):
            line = await proc.stdout.readline()
        if not line.startswith(b"PORT "):
            raise RuntimeError(f"{kind} server did not start: {log_path.read_text()[-2000:]}")
        if pin:
            os.sched_setaffinity(proc.pid, {SERVER_CPU})
        yield int(line.split()[1])
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


class Bench:
    """The servers of one phase of the bench and the figures collected from them."""

    def __init__(self, params: Params, workdir: Path, session: aiohttp.ClientSession) -> None:
        self.params = params
        self.workdir = workdir
        self.session = session
        self.stream = workdir / "stream.sse"
        self.cpu: dict[str, dict[str, list[CpuFigure]]] = defaultdict(lambda: defaultdict(list))
        self.results: Results = {kind: {} for kind in KINDS}

    async def start(self, stack: AsyncExitStack, kind: str) -> Control:
        """Start a fresh `kind` server that lives as long as `stack`."""
        stream = None if kind == "research" else self.stream
        port = await stack.enter_async_context(
            server(kind, self.workdir, stream=stream, pin=self.params.pin, store=self.params.store)
        )
        return Control(self.session, port)

    async def cpu_phase(self) -> None:
        """CPU per token event, the three servers' runs interleaved; research-service extras."""
        p = self.params
        async with AsyncExitStack() as stack:
            research = await self.start(stack, "research")
            path, body = await capture(research, tokens=p.tokens)
            await asyncio.to_thread(self.stream.write_bytes, body)
            servers = {"research": research}
            for kind in BASELINES:
                servers[kind] = await self.start(stack, kind)
            one, many = Ask(p.tokens, hold=True), Ask(p.fanout_tokens, hold=True)
            for _ in range(p.repeat):
                for kind, ctl in servers.items():
                    self.cpu[kind]["cpu_1_live"].append(await live_cpu(ctl, one, listeners=1))
            for _ in range(p.fanout_repeat):
                for kind, ctl in servers.items():
                    figure = await live_cpu(ctl, many, listeners=p.fanout)
                    self.cpu[kind]["cpu_fanout_live"].append(figure)
            extra = self.cpu["research"]
            for _ in range(p.repeat):
                burst = Ask(p.tokens, hold=True, burst=True)
                extra["cpu_1_burst"].append(await live_cpu(research, burst, listeners=1))
                figure = await replay_cpu(research, path, listeners=1, tokens=p.tokens)
                extra["cpu_1_replay"].append(figure)
            burst = Ask(p.fanout_tokens, hold=True, burst=True)
            extra["cpu_fanout_burst"].append(await live_cpu(research, burst, listeners=p.fanout))
            figure = await replay_cpu(research, path, listeners=p.fanout, tokens=p.tokens)
            extra["cpu_fanout_replay"].append(figure)
        for kind, figures in self.cpu.items():
            for key, found in figures.items():
                middle = sorted(found, key=lambda f: f.us_per_event)[(len(found) - 1) // 2]
                self.results[kind][f"{key}_us"] = middle.us_per_event
                self.results[kind][f"{key}_busy"] = middle.busy

    async def latency_memory_phase(self) -> None:
        """Latency (rounds interleaved) and idle memory, on fresh server processes."""
        p = self.params
        async with AsyncExitStack() as stack:
            servers = {kind: await self.start(stack, kind) for kind in KINDS}
            found = {kind: Latencies() for kind in KINDS}
            for _ in range(LATENCY_ROUNDS):
                for kind, ctl in servers.items():
                    await latency(ctl, found[kind], runs=max(1, p.latency_runs // LATENCY_ROUNDS))
            for kind, ctl in servers.items():
                self.results[kind].update(found[kind].summary())
                idle = await idle_memory(ctl, listeners=p.idle, probe_s=p.idle_probe_s)
                self.results[kind].update(idle)


async def timed(label: str, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one phase of the bench and say how long it took (on stderr)."""
    began = time.perf_counter()
    await step()
    print(f"{label}: {time.perf_counter() - began:.1f} s", file=sys.stderr, flush=True)


async def run(params: Params) -> Results:
    """The whole bench; every server process is stopped when it returns or fails."""
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            bench = Bench(params, Path(tmp), session)
            async with asyncio.timeout(TOTAL_TIMEOUT_S):
                await timed("cpu per event", bench.cpu_phase)
                await timed("latency and idle memory", bench.latency_memory_phase)
    return bench.results


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the bench, print the table, optionally save JSON."""
    args = parse_flags(__doc__, argv, pinning=True, store=True)
    params = QUICK if args.quick else FULL
    params = replace(params, pin=not args.no_pin and can_pin(), store=args.store)
    prepare(pin=params.pin)
    info = announce_machine()
    results = asyncio.run(run(params))
    print(render_table(results, params=asdict(params)))
    save_json(args.json, {"machine": info, "params": asdict(params), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
