"""Scale benchmark: N concurrent runs on one research-service process, beside bare aiohttp.

For N in 10, 100, 300, 500 (issue 16): N runs posted at once on the embedded defaults (builtin
model at 20 ms a word, local search over the stdlib docs), one SSE listener per run. Per N: the
phases' durations, POST latency, each event's delivery lag (the recording's `t_ms` against its
receive time), the service's longest event-loop stall (from GET /metrics), CPU per delivered
event and RSS, and whether every run completed; then a bare aiohttp server plays the same runs'
recordings at their recorded pace to the same number of listeners, for the lag and CPU floor.
Run `python bench/scale_bench.py --help`; bench/README.md ("Scale benchmark") explains it.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

import aiohttp
from harness import SERVER_CPU, announce_machine, can_pin, parse_flags, prepare, save_json
from relay_procs import CpuSample, Proc, cpu_sample, free_port, started, system_busy_s
from scale_client import (
    LoopProbe,
    Posted,
    Poster,
    Recorder,
    connect_posters,
    connect_recorders,
    fetch_recordings,
    scrape,
    wall_offset,
)
from scale_report import StepData, figures, render
from scale_targets import targets
from scale_workload import run_body

BENCH_DIR: Final = Path(__file__).resolve().parent
HOST: Final = "127.0.0.1"
#: Longest one step's window may take (500 runs searching at once take tens of seconds).
WINDOW_TIMEOUT_S: Final = 600.0
#: The service's settings in issue 16.
SERVE_FLAGS: Final = ("--max-active-runs=1000", "--token-delay-ms=20", "--log-level=WARNING")
#: Runs each fresh server gets before the measured window (its first calls are slower).
WARMUP_RUNS: Final = 3
#: The warm-up asks questions no measured run asks (up to 600 runs).
WARMUP_FIRST_QUESTION: Final = 600


@dataclass(frozen=True, slots=True)
class Params:
    """The steps: how many concurrent runs each measures."""

    steps: tuple[int, ...]
    pin: bool = True
    store: str = "sqlite"
    #: Seconds over which a step's POSTs are sent, evenly; 0: all at once (issue 16's burst).
    spread_s: float = 0.0


FULL: Final = Params(steps=(10, 100, 300, 500))
QUICK: Final = Params(steps=(5, 20))


def serve_args(data_dir: Path, port: int, store: str) -> list[str]:
    """`research-service serve` on the embedded defaults, with issue 16's limits."""
    return [
        sys.executable,
        "-m",
        "research_service",
        "serve",
        f"--host={HOST}",
        f"--port={port}",
        f"--data-dir={data_dir}",
        f"--store={store}",
        *SERVE_FLAGS,
    ]


async def index_once(tmp: Path) -> Path:
    """Start `serve` once in a seed data folder, which indexes the stdlib docs; the folder."""
    seed = tmp / "seed"
    port = free_port()
    began = time.perf_counter()
    async with started(serve_args(seed, port, "memory"), log=tmp / "seed.log", cpu=None, port=port):
        pass
    print(f"indexed the stdlib docs: {time.perf_counter() - began:.1f} s", file=sys.stderr)
    return seed


def data_dir_from(seed: Path, target: Path) -> Path:
    """A fresh data folder holding only the seed's corpus index."""
    target.mkdir()
    for index in seed.glob("corpus-*"):
        shutil.copy2(index, target / index.name)
    return target


def memory_kib(pid: int) -> tuple[int, int]:
    """A process's VmRSS and VmHWM (its peak RSS) in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found["VmRSS"], found["VmHWM"]


Client = tuple[Poster, Recorder]


async def connect(proc: Proc, runs: int) -> list[Client]:
    """Per run, a connection for its POST and one for its stream, both open before it is sent."""
    posters = await connect_posters(proc.port, runs)
    recorders = await connect_recorders(proc.port, runs)
    return list(zip(posters, recorders, strict=True))


async def burst(clients: list[Client], *, first: int = 0, spread_s: float = 0.0) -> list[Posted]:
    """Send every POST at once, or evenly over `spread_s` (questions `first`, `first` + 1 …);
    each run's stream is asked for the moment its POST is answered."""
    began = time.monotonic()
    for number, (poster, recorder) in enumerate(clients):
        if spread_s:
            due = began + number * spread_s / len(clients)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        poster.on_answer = lambda posted, recorder=recorder: recorder.get(posted.events_url)
        poster.send(run_body(first + number))
    return await asyncio.gather(*(poster.answer for poster, _ in clients))


async def warm_up(proc: Proc) -> None:
    """A few runs to their end, not measured."""
    clients = await connect(proc, WARMUP_RUNS)
    await burst(clients, first=WARMUP_FIRST_QUESTION)
    await asyncio.gather(*(recorder.closed for _, recorder in clients))


def cpu_since(pid: int, before: CpuSample) -> tuple[float, float]:
    """A process's CPU seconds since `before`, and the same from /proc/PID/stat's utime +
    stime (10 ms ticks). The first is every thread's run time in ns (schedstat), unless a
    thread exited in between (its time is gone from /proc/PID/task): then the ticks."""
    after = cpu_sample(pid)
    seconds, lost = after.since(before)
    ticks = after.ticks_since(before)
    return (ticks if lost else seconds), ticks


async def window(
    session: aiohttp.ClientSession,
    proc: Proc,
    *,
    server: str,
    runs: int,
    metrics: bool,
    spread_s: float = 0.0,
) -> StepData:
    """`runs` runs posted at once (or over `spread_s`), one listener each, until every stream
    has ended."""
    base = f"http://{HOST}:{proc.port}"
    clients = await connect(proc, runs)
    before = await scrape(session, base) if metrics else None
    probe = LoopProbe()
    probe.start()
    # No collection of the client's own garbage may hold its loop (and its stamps) meanwhile.
    gc.disable()
    busy_0, own_0 = system_busy_s(), time.process_time()
    cpu_0, began = cpu_sample(proc.pid), time.monotonic()
    try:
        async with asyncio.timeout(WINDOW_TIMEOUT_S):
            posted = await burst(clients, spread_s=spread_s)
            # Every run has arrived and every listener is attached: from here on nothing
            # new comes in, and the runs only execute.
            await asyncio.gather(*(recorder.opened for _, recorder in clients))
            all_open = time.monotonic() - began
            executing = await scrape(session, base) if metrics else None
            await asyncio.gather(*(recorder.closed for _, recorder in clients))
    finally:
        gc.enable()
    wall, (cpu, cpu_ticks) = time.monotonic() - began, cpu_since(proc.pid, cpu_0)
    own, busy = time.process_time() - own_0, system_busy_s() - busy_0
    rss, peak = memory_kib(proc.pid)
    client_stall = await probe.stop()
    after = await scrape(session, base) if metrics else None
    recordings = await fetch_recordings(session, base, [p.run_id for p in posted])
    return StepData(
        server=server,
        runs=runs,
        posted=posted,
        streams=[recorder.events() for _, recorder in clients],
        heads=[recorder.head_at for _, recorder in clients],
        recordings=recordings,
        wall_s=wall,
        cpu_s=cpu,
        cpu_ticks_s=cpu_ticks,
        rss_kib=rss,
        peak_rss_kib=peak,
        wall_offset=wall_offset(),
        client_stall_s=client_stall,
        client_cpu_s=own,
        other_cores=max(0.0, busy - cpu - own) / wall,
        scrapes=(before, after) if before is not None and after is not None else None,
        executing=(executing, after) if executing is not None and after is not None else None,
        all_open_s=all_open,
    )


async def service_step(
    session: aiohttp.ClientSession, tmp: Path, seed: Path, runs: int, params: Params
) -> StepData:
    """One fresh research-service process: warm-up, then the window."""
    data_dir = data_dir_from(seed, tmp / f"research-{runs}")
    port = free_port()
    cpu = SERVER_CPU if params.pin else None
    args = serve_args(data_dir, port, params.store)
    async with started(args, log=tmp / f"research-{runs}.log", cpu=cpu, port=port) as proc:
        await warm_up(proc)
        return await window(
            session,
            proc,
            server="research-service",
            runs=runs,
            metrics=True,
            spread_s=params.spread_s,
        )


async def baseline_step(
    session: aiohttp.ClientSession, tmp: Path, service: StepData, params: Params
) -> StepData:
    """The bare aiohttp server playing the service step's recordings to as many listeners."""
    scripts = tmp / f"scripts-{service.runs}"
    scripts.mkdir()
    for number, recording in enumerate(service.recordings):
        if recording is not None:
            (scripts / f"{number:04d}.jsonl").write_text(recording.text)
    args = [sys.executable, str(BENCH_DIR / "scale_baseline.py"), f"--scripts={scripts}"]
    cpu = SERVER_CPU if params.pin else None
    async with started(args, log=tmp / f"baseline-{service.runs}.log", cpu=cpu) as proc:
        await warm_up(proc)
        return await window(
            session,
            proc,
            server="bare aiohttp",
            runs=service.runs,
            metrics=True,
            spread_s=params.spread_s,
        )


async def run(params: Params) -> list[StepData]:
    """Every step, the service then its baseline; every process is gone when it returns."""
    steps: list[StepData] = []
    # Nothing in the client's start-up heap is scanned again: a full collection would hold
    # its loop, and every receive stamp with it.
    gc.collect()
    gc.freeze()
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as name:
        tmp = Path(name)
        seed = await index_once(tmp)
        async with AsyncExitStack() as stack:
            connector = aiohttp.TCPConnector(limit=0)
            session = await stack.enter_async_context(aiohttp.ClientSession(connector=connector))
            for runs in params.steps:
                began = time.perf_counter()
                service = await service_step(session, tmp, seed, runs, params)
                baseline = await baseline_step(session, tmp, service, params)
                steps += [service, baseline]
                other = max(service.other_cores, baseline.other_cores)
                print(
                    f"{runs} runs: {time.perf_counter() - began:.1f} s; other processes used up "
                    f"to {other:.2f} cores meanwhile"
                    + (
                        " (the figures are noisy: compare with bare aiohttp)" if other > 0.1 else ""
                    ),
                    file=sys.stderr,
                )
    return steps


def main(argv: Iterable[str] | None = None) -> int:
    """Parse flags, run the steps, print the tables, optionally save JSON."""
    args = parse_flags(
        __doc__,
        list(argv) if argv is not None else None,
        pinning=True,
        store=True,
        store_default="sqlite",
        steps=True,
        spread=True,
    )
    params = QUICK if args.quick else FULL
    if args.steps:
        params = Params(steps=args.steps)
    pin = not args.no_pin and can_pin()
    if args.spread < 0:
        print("--spread takes seconds, 0 or more", file=sys.stderr)
        return 2
    params = Params(steps=params.steps, pin=pin, store=args.store, spread_s=args.spread)
    prepare(pin=pin)
    info = announce_machine()
    began = time.perf_counter()
    steps = asyncio.run(run(params))
    print(f"scale bench: {time.perf_counter() - began:.1f} s", file=sys.stderr)
    results = figures(steps)
    print(render(results, steps=params.steps, spread_s=params.spread_s))
    document = {
        "machine": info,
        "params": asdict(params),
        "results": results,
        "targets": targets(results, steps=params.steps),
    }
    save_json(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
