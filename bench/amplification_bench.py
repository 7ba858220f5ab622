"""Amplification benchmark: large runs listed, downloaded and replayed by 20 clients at once.

Each server measures its own event loop: a 5 ms timer notes how late it fires, so the figure is
the longest time anything held the loop. While the clients read, a probe also asks for
`GET /bench/stats` every 5 ms (its latency includes the client's own busy loop) and notes the
RSS the server reports. Side by side, a bare aiohttp server streams the same bytes to the same
20 clients. research-service runs on the SQLite store, as deployed.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import aiohttp
from clients import Control, finish, listen
from harness import announce_machine, can_pin, parse_flags, prepare, save_json
from measure import capture, percentile
from stream_bench import server
from workload import Ask

CLIENTS: Final = 20
PROBE_EVERY_S: Final = 0.005


@dataclass(frozen=True, slots=True)
class Params:
    """Sizes of one bench run."""

    runs: int
    tokens: int
    pin: bool = True


FULL: Final = Params(runs=20, tokens=100_000)
QUICK: Final = Params(runs=4, tokens=20_000)


@dataclass(frozen=True, slots=True)
class Figure:
    """One scenario: wall time, the probe's latencies, the memory the clients' requests took."""

    scenario: str
    server: str
    wall_s: float
    bytes_per_client: int
    loop_stall_max_ms: float
    probe_p99_ms: float
    probe_max_ms: float
    rss_growth_mib: float


async def probe(ctl: Control, done: asyncio.Event) -> tuple[list[float], list[int]]:
    """Time `/bench/stats` until `done`; its latencies (ms) and the RSS it reported (KiB)."""
    latencies: list[float] = []
    rss: list[int] = []
    while not done.is_set():
        began = time.perf_counter()
        stats = await ctl.stats()
        latencies.append((time.perf_counter() - began) * 1000)
        rss.append(stats.rss_kib)
        await asyncio.sleep(PROBE_EVERY_S)
    return latencies, rss


async def read_all(session: aiohttp.ClientSession, url: str) -> int:
    """GET `url` and drain the body; how many bytes came."""
    size = 0
    async with session.get(url) as response:
        response.raise_for_status()
        async for chunk in response.content.iter_chunked(1 << 16):
            size += len(chunk)
    return size


async def scenario(name: str, server_kind: str, ctl: Control, path: str) -> Figure:
    """CLIENTS clients read `path` at once, each on its own connection, under the probe."""
    before = (await ctl.stats(gc=True)).rss_kib
    await ctl.stats(reset_lag=True)  # after the collection, which holds the loop itself
    done = asyncio.Event()
    probing = asyncio.create_task(probe(ctl, done))
    began = time.perf_counter()
    async with aiohttp.ClientSession() as clients:
        sizes = await asyncio.gather(*(read_all(clients, ctl.base + path) for _ in range(CLIENTS)))
    wall = time.perf_counter() - began
    done.set()
    latencies, rss = await probing
    stall = (await ctl.stats()).lag_max_ms
    return Figure(
        name,
        server_kind,
        wall,
        sizes[0],
        stall,
        percentile(latencies, 99),
        max(latencies),
        (max(rss, default=before) - before) / 1024,
    )


async def big_runs(ctl: Control, params: Params) -> list[str]:
    """Run `params.runs` large runs to their end; their events paths."""
    paths = []
    for _ in range(params.runs):
        path = await ctl.create_run(Ask(tokens=params.tokens, burst=True))
        await finish([await listen(ctl.port, path)])
        paths.append(path)
    return paths


async def run(params: Params) -> list[Figure]:
    """Every scenario on research-service, and the replay on the bare aiohttp server."""
    with tempfile.TemporaryDirectory(prefix="amplification-") as tmp:
        workdir = Path(tmp)
        async with AsyncExitStack() as stack:
            session = await stack.enter_async_context(aiohttp.ClientSession())
            port = await stack.enter_async_context(
                server("research", workdir, stream=None, pin=params.pin, store="sqlite")
            )
            research = Control(session, port)
            _, body = await capture(research, tokens=params.tokens)
            stream = workdir / "stream.sse"
            stream.write_bytes(body)
            raw_port = await stack.enter_async_context(
                server("raw", workdir, stream=stream, pin=params.pin, store="sqlite")
            )
            raw = Control(session, raw_port)
            paths = await big_runs(research, params)
            run_path = paths[-1].removesuffix("/events")
            raw_path = await raw.create_run(Ask(tokens=params.tokens))
            return [
                await scenario(
                    "GET /v1/runs?limit=100", "research", research, "/v1/runs?limit=100"
                ),
                await scenario("GET /v1/runs/{id}", "research", research, run_path),
                await scenario("GET …/recording", "research", research, f"{run_path}/recording"),
                await scenario("GET …/events (replay)", "research", research, paths[-1]),
                await scenario("GET …/events (replay)", "raw aiohttp", raw, raw_path),
            ]


def render(figures: list[Figure], params: Params) -> str:
    """The results as a Markdown table."""
    head = (
        f"{params.runs} runs of {params.tokens:,} token events; {CLIENTS} clients at once\n\n"
        "| scenario | server | wall s | bytes per client | loop stall max ms | probe p99 ms "
        "| probe max ms | RSS growth MiB |\n|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {f.scenario} | {f.server} | {f.wall_s:.2f} | {f.bytes_per_client:,} | "
        f"{f.loop_stall_max_ms:.1f} | {f.probe_p99_ms:.1f} | {f.probe_max_ms:.1f} | "
        f"{f.rss_growth_mib:.1f} |"
        for f in figures
    ]
    return "\n".join([head, *rows])


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the bench, print the table, optionally save JSON."""
    args = parse_flags(__doc__, argv, pinning=True)
    params = QUICK if args.quick else FULL
    params = replace(params, pin=not args.no_pin and can_pin())
    prepare(pin=params.pin)
    info = announce_machine()
    figures = asyncio.run(run(params))
    print(render(figures, params))
    document: dict[str, Any] = {"machine": info, "params": asdict(params)}
    document["results"] = [asdict(f) for f in figures]
    save_json(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
