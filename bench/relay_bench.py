"""Token relay benchmark: research-service `--llm openai` relaying a fake model's stream.

The fake OpenAI server (tests/fake_openai) streams pieces at 1,000 per second on a fixed
schedule and stamps each chunk it writes; a raw-socket listener in this process stamps each
`token` event it reads. Figures: the added latency (chunk written -> token event read, both
on CLOCK_MONOTONIC), and research-service's CPU per relayed token over the synthesis window,
next to the stream bench's bare aiohttp-sse and raw aiohttp servers streaming the same bytes.
Run `python bench/relay_bench.py --help`; bench/README.md ("Token relay") explains the figures.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import aiohttp
from clients import Control, dechunk, finish, listen_many
from harness import (
    CLIENT_CPU,
    SERVER_CPU,
    announce_machine,
    can_pin,
    parse_flags,
    prepare,
    save_json,
)
from measure import percentile
from relay_client import StampedListener, added_latency_ms, research
from relay_procs import (
    CpuSample,
    Proc,
    cpu_sample,
    free_port,
    process_s,
    started,
    system_busy_s,
)
from relay_report import P99_TARGET_MS, cpu_ratios, render_table
from report import Results
from workload import Ask

BENCH_DIR: Final = Path(__file__).resolve().parent
ROOT: Final = BENCH_DIR.parent
TOTAL_TIMEOUT_S: Final = 120.0
RUN_TIMEOUT_S: Final = 60.0
BASELINES: Final = ("sse", "raw")
#: More CPU than this (in cores) used by other processes while measuring is worth a warning.
NOISE_CORES: Final = 0.1
QUESTION: Final = "How does a token relay stream a model's answer to its listeners?"
OPTIONS: Final = {"breadth": 1, "max_sources": 3}
#: A few small documents, so the local search finds sources for the question.
CORPUS: Final = {
    "relay.txt": "A token relay reads a model's streamed answer and forwards each token to "
    "every listener as a server-sent event, as soon as the token arrives.",
    "sse.txt": "Server-sent events stream text over one HTTP response; each event has an id, "
    "an event name and a data line, and listeners resume with Last-Event-ID.",
    "latency.txt": "Stream latency is the time from the model writing a chunk to the listener "
    "reading the event; buffering or batching writes adds to it.",
}


@dataclass(frozen=True, slots=True)
class Params:
    """How big the measurement is."""

    tokens: int
    runs: int
    interval_s: float = 0.001
    pin: bool = True


FULL: Final = Params(tokens=4_000, runs=5)
QUICK: Final = Params(tokens=1_000, runs=1)


@dataclass(frozen=True, slots=True)
class Window:
    """CPU spent by one process over one window, per token."""

    cpu_us: float
    busy: float
    ticks_us: float  # the same from /proc/<pid>/stat's clock ticks, as a cross-check
    thread_lost: bool  # a thread exited in the window; its CPU there is missing

    @classmethod
    def of(cls, before: CpuSample, after: CpuSample, *, wall: float, tokens: int) -> Window:
        """The window between two samples of one process."""
        cpu, lost = after.since(before)
        ticks = after.ticks_since(before)
        return cls(cpu / tokens * 1e6, cpu / wall, ticks / tokens * 1e6, lost)


@dataclass(frozen=True, slots=True)
class RelayRun:
    """One research-service run: latencies, its CPU, the fake's CPU."""

    latencies_ms: list[float]
    research: Window
    fake: Window


def write_corpus(folder: Path) -> None:
    """The small corpus research-service searches."""
    folder.mkdir()
    for name, text in CORPUS.items():
        (folder / name).write_text(text + "\n")


async def fake_stamps(fake: Proc) -> dict[str, Any]:
    """Ask the fake for the latest answer's pieces and their write times."""
    stdin, stdout = fake.process.stdin, fake.process.stdout
    assert stdin is not None
    assert stdout is not None
    stdin.write(b"stamps\n")
    await stdin.drain()
    answer: dict[str, Any] = json.loads(await stdout.readline())
    if "error" in answer:
        raise RuntimeError(f"fake OpenAI server: {answer['error']}")
    return answer


async def relay_run(server: Proc, fake: Proc, *, tokens: int) -> tuple[RelayRun, StampedListener]:
    """One run through `GET /v1/research`; CPU sampled as synthesis starts and completes."""
    samples: list[tuple[CpuSample, CpuSample, float]] = []

    def sample() -> None:
        samples.append((cpu_sample(server.pid), cpu_sample(fake.pid), time.monotonic()))

    async with asyncio.timeout(RUN_TIMEOUT_S):
        listener = await research(
            server.port, QUESTION, options=OPTIONS, on_start=sample, on_end=sample
        )
        await listener.closed
    listener.check()
    if len(samples) != 2:
        raise RuntimeError("the stream never showed `synthesizing` starting and completing")
    stamps = await fake_stamps(fake)
    latencies = added_latency_ms(listener.tokens(), stamps["pieces"], stamps["sent_at"])
    (server_0, fake_0, t_0), (server_1, fake_1, t_1) = samples
    run = RelayRun(
        latencies,
        Window.of(server_0, server_1, wall=t_1 - t_0, tokens=tokens),
        Window.of(fake_0, fake_1, wall=t_1 - t_0, tokens=tokens),
    )
    return run, listener


async def baseline_run(ctl: Control, server: Proc, *, tokens: int) -> Window:
    """One held stream of `tokens` token events, released and read to the end."""
    path = await ctl.create_run(Ask(tokens, hold=True))
    listeners = await listen_many(ctl.port, path, 1, ready=True)
    before, began = cpu_sample(server.pid), time.monotonic()
    await ctl.start()
    async with asyncio.timeout(RUN_TIMEOUT_S):
        delivered = await finish(listeners)
    after, wall = cpu_sample(server.pid), time.monotonic() - began
    if delivered != tokens:
        raise RuntimeError(f"{path}: delivered {delivered} token events, expected {tokens}")
    return Window.of(before, after, wall=wall, tokens=tokens)


def median_window(windows: list[Window]) -> Window:
    """The window with the median CPU per token."""
    return sorted(windows, key=lambda w: w.cpu_us)[(len(windows) - 1) // 2]


def research_command(port: int, tmp: Path) -> list[str]:
    """`research-service serve --llm openai` on `port`, with a temporary data dir and corpus."""
    return [
        sys.executable,
        "-m",
        "research_service",
        "serve",
        "--llm=openai",
        "--host=127.0.0.1",
        f"--port={port}",
        f"--data-dir={tmp / 'data-research'}",
        f"--corpus={tmp / 'corpus'}",
        "--model=fake-model",
        # The bench answers are longer than the default ceiling allows.
        "--max-tokens-per-run=1000000",
        "--log-level=WARNING",
    ]


async def run(params: Params) -> tuple[Results, dict[str, Any]]:
    """The whole bench; every process is stopped when it returns or fails."""
    server_cpu = SERVER_CPU if params.pin else None
    client_cpu = CLIENT_CPU if params.pin else None
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as name:
        tmp = Path(name)
        write_corpus(tmp / "corpus")
        async with AsyncExitStack() as stack, asyncio.timeout(TOTAL_TIMEOUT_S):
            session = await stack.enter_async_context(aiohttp.ClientSession())
            fake_args = [str(BENCH_DIR / "relay_fake.py"), f"--tokens={params.tokens}"]
            fake_args.append(f"--interval={params.interval_s}")
            fake = await stack.enter_async_context(
                started([sys.executable, *fake_args], log=tmp / "fake.log", cpu=client_cpu)
            )
            env = dict(os.environ)
            env.update(OPENAI_API_KEY="test", RESEARCH_OPENAI_BASE_URL=f"{_url(fake.port)}/v1")
            port = free_port()
            server = await stack.enter_async_context(
                started(
                    research_command(port, tmp),
                    log=tmp / "research.log",
                    cpu=server_cpu,
                    env=env,
                    port=port,
                )
            )
            # The warm-up run is not counted; its stream is what the baselines replay.
            _, warm = await relay_run(server, fake, tokens=params.tokens)
            stream = tmp / "stream.sse"
            stream.write_bytes(dechunk(bytes(warm.raw)))
            baselines: dict[str, tuple[Control, Proc]] = {}
            for kind in BASELINES:
                data_dir = tmp / f"data-{kind}"
                data_dir.mkdir()
                args = [str(BENCH_DIR / "servers.py"), kind, f"--data-dir={data_dir}"]
                args += [f"--stream={stream}", "--exit-on-stdin-eof"]
                proc = await stack.enter_async_context(
                    started([sys.executable, *args], log=tmp / f"{kind}.log", cpu=server_cpu)
                )
                baselines[kind] = (Control(session, proc.port), proc)
                await baseline_run(*baselines[kind], tokens=params.tokens)  # warm-up
            relays: list[RelayRun] = []
            bare: dict[str, list[Window]] = {kind: [] for kind in BASELINES}
            pids = [
                os.getpid(),
                fake.pid,
                server.pid,
                *(proc.pid for _, proc in baselines.values()),
            ]
            began, busy, ours = time.monotonic(), system_busy_s(), _cpu_of(pids)
            for _ in range(params.runs):
                relays.append((await relay_run(server, fake, tokens=params.tokens))[0])
                for kind, (ctl, proc) in baselines.items():
                    bare[kind].append(await baseline_run(ctl, proc, tokens=params.tokens))
            others = (system_busy_s() - busy) - (_cpu_of(pids) - ours)
            wall = time.monotonic() - began
    results, detail = summarize(relays, bare)
    detail["other_cpu_cores"] = max(0.0, others / wall)
    return results, detail


def _cpu_of(pids: list[int]) -> float:
    return sum(process_s(pid) for pid in pids)


def _url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def summarize(
    relays: list[RelayRun], bare: dict[str, list[Window]]
) -> tuple[Results, dict[str, Any]]:
    """The table's figures (medians over runs, latency pooled) and the per-run detail."""
    pooled = [ms for run in relays for ms in run.latencies_ms]
    mine = median_window([run.research for run in relays])
    fake = median_window([run.fake for run in relays])
    results: Results = {
        "research": {
            "latency_p50_ms": percentile(pooled, 50),
            "latency_p99_ms": percentile(pooled, 99),
            "latency_max_ms": max(pooled),
            "latency_mean_ms": statistics.fmean(pooled),
            "late_pct": sum(ms > P99_TARGET_MS for ms in pooled) / len(pooled) * 100,
            "cpu_us": mine.cpu_us,
            "cpu_ticks_us": mine.ticks_us,
            "busy": mine.busy,
            "fake_cpu_us": fake.cpu_us,
            "fake_busy": fake.busy,
        }
    }
    for kind, windows in bare.items():
        middle = median_window(windows)
        results[kind] = {"cpu_us": middle.cpu_us, "cpu_ticks_us": middle.ticks_us}
        results[kind]["busy"] = middle.busy
    detail = {
        "relay_runs": [
            {
                "latency_p50_ms": percentile(run.latencies_ms, 50),
                "latency_p99_ms": percentile(run.latencies_ms, 99),
                "latency_max_ms": max(run.latencies_ms),
                "late_tokens": sum(ms > P99_TARGET_MS for ms in run.latencies_ms),
                "research": asdict(run.research),
                "fake": asdict(run.fake),
            }
            for run in relays
        ],
        "baseline_runs": {kind: [asdict(w) for w in windows] for kind, windows in bare.items()},
    }
    return results, detail


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the bench, print the table, optionally save JSON."""
    args = parse_flags(__doc__, argv, pinning=True)
    params = QUICK if args.quick else FULL
    params = replace(params, pin=not args.no_pin and can_pin())
    prepare(pin=params.pin)
    info = announce_machine()
    began = time.perf_counter()
    # Keep this process's own full collections (tens of ms) out of the client's timestamps.
    gc.collect()
    gc.freeze()
    results, detail = asyncio.run(run(params))
    print(f"relay bench: {time.perf_counter() - began:.1f} s", file=sys.stderr)
    print(render_table(results, tokens=params.tokens))
    print(cpu_ratios(results))
    others = detail["other_cpu_cores"]
    print(f"other processes used {others:.2f} cores while measuring", file=sys.stderr)
    if others > NOISE_CORES:
        print(f"warning: other processes used {others:.2f} cores: the machine was not quiet")
    lost = [run for run in detail["relay_runs"] if run["research"]["thread_lost"]]
    if lost:
        print(f"warning: a server thread exited in {len(lost)} window(s); CPU is understated")
    save_json(args.json, {"machine": info, "params": asdict(params), "results": results, **detail})
    return 0


if __name__ == "__main__":
    sys.exit(main())
