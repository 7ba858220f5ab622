"""Diagnostic (bench/README.md, issue 16): what one `GET /metrics` costs a service's event loop.

`python bench/diagnostics/metrics_scrape.py [--source DIR ...] [--rounds N] [--requests N]`
starts `research-service serve` from each source folder (its `research_service` package first
on `PYTHONPATH`; by default this checkout) pinned to the bench's server core, on its embedded
defaults (a data folder per source, kept between rounds), and times `GET /metrics` and `GET
/healthz` one after another on one connection from the other core: `--rounds` fresh processes
per source (3), the sources taking turns, `--requests` of each path per process (60). It
prints p50 and p99 per source: the scrape's own cost is its figure minus the health check's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import aiohttp

BENCH: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

from harness import SERVER_CPU, can_pin  # noqa: E402
from relay_procs import free_port, started  # noqa: E402

PATHS: Final = ("/metrics", "/healthz")


async def timed(port: int, requests: int) -> dict[str, list[float]]:
    """Milliseconds per request of each path, `requests` of each, one after another."""
    found: dict[str, list[float]] = {path: [] for path in PATHS}
    async with aiohttp.ClientSession() as session:
        for path in PATHS:
            for _ in range(requests):
                began = time.perf_counter()
                async with session.get(f"http://127.0.0.1:{port}{path}") as answer:
                    await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"GET {path}: {answer.status}")
                found[path].append((time.perf_counter() - began) * 1e3)
    return found


async def one_round(source: Path, data_dir: Path, requests: int) -> dict[str, list[float]]:
    """A fresh service from `source`, timed."""
    port = free_port()
    # -P: the current folder does not come first on the path, `source` does.
    args = [sys.executable, "-P", "-m", "research_service", "serve", f"--port={port}"]
    args += [f"--data-dir={data_dir}", "--log-level=WARNING"]
    env = {**os.environ, "PYTHONPATH": str(source)}
    cpu = SERVER_CPU if can_pin() else None
    async with started(args, log=data_dir / "serve.log", cpu=cpu, env=env, port=port):
        return await timed(port, requests)


def percentile(values: list[float], pct: int) -> float:
    """The `pct`-th percentile (inclusive method)."""
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


async def main(sources: list[Path], *, rounds: int, requests: int) -> None:
    """Every source, `rounds` times in turn; then the table."""
    if can_pin():
        os.sched_setaffinity(0, {1 - SERVER_CPU})
    times: dict[Path, dict[str, list[float]]] = {s: {p: [] for p in PATHS} for s in sources}
    with tempfile.TemporaryDirectory() as tmp:
        folders = {source: Path(tempfile.mkdtemp(dir=tmp)) for source in sources}
        for _ in range(rounds):
            for source in sources:
                found = await one_round(source, folders[source], requests)
                for path, values in found.items():
                    times[source][path] += values
    print("| source | /metrics p50 / p99 ms | /healthz p50 / p99 ms |")
    print("|---|---|---|")
    for source, found in times.items():
        cells = [f"{percentile(found[p], 50):.2f} / {percentile(found[p], 99):.2f}" for p in PATHS]
        print(f"| {source} | {' | '.join(cells)} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, action="append", help="a checkout's folder")
    parser.add_argument("--rounds", type=int, default=3, help="processes per source")
    parser.add_argument("--requests", type=int, default=60, help="requests per path and process")
    flags = parser.parse_args()
    given = [source.resolve() for source in flags.source or [BENCH.parent]]
    asyncio.run(main(given, rounds=flags.rounds, requests=flags.requests))
