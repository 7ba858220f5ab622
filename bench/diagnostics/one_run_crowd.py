"""Diagnostic (bench/README.md, issue 16): one run followed by a crowd of listeners.

`python bench/diagnostics/one_run_crowd.py [--listeners N] [--tokens N] [--reconnect]
[--no-pin]` starts the stream bench's research-service server (bench/servers.py, the SQLite
store) pinned to the bench's server core, holds one run of `--tokens` token events (10,000
listeners, 200 tokens by default) until every listener has caught up with it, then lets it go
on, one token per loop turn, while `GET /healthz` is probed every 20 ms. It prints how long
until every listener had the run's `done`, the server's CPU meanwhile, the service's longest
loop stall and the slowest `/healthz`. With `--reconnect`, the run ends first, and then every
listener opens its stream at once, as after a proxy's restart: the figures run from the first
connection to the last `done`. Put another checkout's package first on `PYTHONPATH` to
measure it instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Final

import aiohttp

BENCH: Final = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import stream_bench  # noqa: E402
from clients import finish, listen_many  # noqa: E402
from harness import can_pin, prepare  # noqa: E402
from measure import release, storm  # noqa: E402
from workload import Ask  # noqa: E402


async def crowd(listeners: int, tokens: int, *, pin: bool, reconnect: bool) -> dict[str, float]:
    """The figures of one held run released to `listeners` listeners, or of `listeners`
    reading an ended run all at once (`reconnect`)."""
    params = replace(stream_bench.FULL, pin=pin, store="sqlite")
    with tempfile.TemporaryDirectory(prefix="one-run-crowd-") as tmp:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session, AsyncExitStack() as stack:
            bench = stream_bench.Bench(params, Path(tmp), session)
            ctl = await bench.start(stack, "research")
            if reconnect:
                path = await ctl.create_run(Ask(tokens=tokens))
                await finish(await listen_many(ctl.port, path, 1, ready=False))  # it ended
                released = await storm(ctl, path, listeners)
            else:
                path = await ctl.create_run(Ask(tokens=tokens, hold=True))
                opened = await listen_many(ctl.port, path, listeners, ready=True)
                released = await release(ctl, opened)
    if released.tokens != listeners * tokens:
        raise RuntimeError(f"the listeners got {released.tokens} tokens in all")
    return {
        "listeners": listeners,
        "tokens": tokens,
        "done_s": released.took_s,
        "cpu_s": released.cpu_s,
        "stall_ms": released.lag_max_ms,
        "healthz_max_ms": max(released.healthz_ms),
    }


def main(argv: list[str] | None = None) -> int:
    """Parse flags, measure, print one table row."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--listeners", type=int, default=10_000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client")
    parser.add_argument(
        "--reconnect",
        action="store_true",
        help="the run ends first; then every listener opens its stream at once",
    )
    args = parser.parse_args(argv)
    pin = not args.no_pin and can_pin()
    prepare(pin=pin)
    found = asyncio.run(crowd(args.listeners, args.tokens, pin=pin, reconnect=args.reconnect))
    print(
        "| listeners | tokens | every `done` after s | server CPU s | longest stall ms "
        "| slowest /healthz ms |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {found['listeners']:,.0f} | {found['tokens']:,.0f} | {found['done_s']:.3f} "
        f"| {found['cpu_s']:.3f} | {found['stall_ms']:.1f} | {found['healthz_max_ms']:.1f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
