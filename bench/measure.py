"""One measurement against one running bench server: CPU per event, latency, idle memory."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from clients import Control, Listener, finish, listen, listen_many
from workload import Ask

WARMUP_LISTENERS: Final = 20
#: The idle step's `GET /healthz` probes: one every 20 ms.
PROBE_EVERY_S: Final = 0.02
SHORT_RUN_TOKENS: Final = 3


@dataclass(frozen=True, slots=True)
class CpuFigure:
    """Server CPU per delivered token event, and the server's busy share of the wall time."""

    us_per_event: float
    busy: float


async def _window(
    ctl: Control, listeners: list[Listener] | None, *, path: str, count: int, expected: int
) -> CpuFigure:
    before = await ctl.stats()
    began = time.perf_counter()
    if listeners is None:
        listeners = await listen_many(ctl.port, path, count, ready=False)
    else:
        await ctl.start()
    delivered = await finish(listeners)
    wall = time.perf_counter() - began
    cpu = (await ctl.stats()).cpu_s - before.cpu_s
    if delivered != expected:
        raise RuntimeError(f"{path}: delivered {delivered} token events, expected {expected}")
    return CpuFigure(cpu / delivered * 1e6, cpu / wall)


async def live_cpu(ctl: Control, ask: Ask, *, listeners: int) -> CpuFigure:
    """All `listeners` attach to one held run first; then it streams `ask.tokens` tokens live."""
    path = await ctl.create_run(ask)
    opened = await listen_many(ctl.port, path, listeners, ready=True)
    return await _window(ctl, opened, path=path, count=listeners, expected=ask.tokens * listeners)


async def replay_cpu(ctl: Control, path: str, *, listeners: int, tokens: int) -> CpuFigure:
    """`listeners` attach to a finished run and read all of it from the log."""
    return await _window(ctl, None, path=path, count=listeners, expected=tokens * listeners)


async def capture(ctl: Control, *, tokens: int) -> tuple[str, bytes]:
    """Run `tokens` tokens to the end; the run's events path and the stream's exact body."""
    path = await ctl.create_run(Ask(tokens=tokens, burst=True))
    listener = await listen(ctl.port, path, capture=True)
    await finish([listener])
    return path, listener.body()


@dataclass(slots=True)
class Latencies:
    """Milliseconds per short run: POST /v1/runs → first `phase`, GET → first byte."""

    to_phase: list[float] = field(default_factory=list)
    to_byte: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """p50 and p99 of both."""
        return {
            "first_phase_p50_ms": percentile(self.to_phase, 50),
            "first_phase_p99_ms": percentile(self.to_phase, 99),
            "first_byte_p50_ms": percentile(self.to_byte, 50),
            "first_byte_p99_ms": percentile(self.to_byte, 99),
        }


def percentile(values: Sequence[float], pct: int) -> float:
    """The `pct`-th percentile (inclusive method); of a single value, that value.

    (A probe of a short window may take one sample: `statistics.quantiles` wants two.)
    """
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


async def latency(ctl: Control, into: Latencies, *, runs: int) -> None:
    """Time `runs` short runs one after another: POST, then at once GET its events_url."""
    for _ in range(runs):
        posted = time.perf_counter()
        path = await ctl.create_run(Ask(tokens=SHORT_RUN_TOKENS))
        listener = await listen(ctl.port, path)
        await finish([listener])
        if listener.first_phase is None or listener.first_byte is None:
            raise RuntimeError(f"{path} ended without a phase event")
        into.to_phase.append((listener.first_phase - posted) * 1e3)
        into.to_byte.append((listener.first_byte - listener.started) * 1e3)


async def idle_memory(ctl: Control, *, listeners: int, probe_s: float) -> dict[str, float]:
    """RSS and tasks each listener adds while held idle on one paused run (after a warm-up),
    and how fast `GET /healthz` answers meanwhile: probed for `probe_s`, every PROBE_EVERY_S
    (longer than the heartbeat interval, so every listener's ping falls in the window)."""
    warm = await ctl.create_run(Ask(tokens=SHORT_RUN_TOKENS))
    await finish(await listen_many(ctl.port, warm, WARMUP_LISTENERS, ready=False))
    path = await ctl.create_run(Ask(tokens=SHORT_RUN_TOKENS, hold=True))
    before = await ctl.stats(gc=True)
    opened = await listen_many(ctl.port, path, listeners, ready=True)
    after = await ctl.stats(gc=True)
    await ctl.stats(reset_lag=True)
    probes = await probe_health(ctl, seconds=probe_s)
    lag = await ctl.stats()
    # Then the run goes on, and each of its last events reaches every one of them.
    released = await release(ctl, opened)
    return {
        "idle_kib": (after.rss_kib - before.rss_kib) / listeners,
        "idle_tasks": (after.tasks - before.tasks) / listeners,
        "idle_healthz_p50_ms": percentile(probes, 50),
        "idle_healthz_p99_ms": percentile(probes, 99),
        "idle_lag_max_ms": lag.lag_max_ms,
        "released_s": released.took_s,
        "released_healthz_max_ms": max(released.healthz_ms),
        "released_lag_max_ms": released.lag_max_ms,
    }


@dataclass(frozen=True, slots=True)
class Released:
    """What letting a held run go on to its waiting listeners took, until each had its end."""

    took_s: float
    cpu_s: float
    #: The server's longest loop stall meanwhile.
    lag_max_ms: float
    #: `GET /healthz` meanwhile, every PROBE_EVERY_S (ms each).
    healthz_ms: list[float]
    #: Token events the listeners got, in all.
    tokens: int


async def storm(ctl: Control, path: str, listeners: int) -> Released:
    """Open `listeners` streams of the ended run at `path` at once (a reconnect storm, in
    batches of connections as fast as they open), probing `GET /healthz`, until each ended."""

    async def opened_and_ended() -> int:
        return await finish(await listen_many(ctl.port, path, listeners, ready=False))

    return await _probed(ctl, opened_and_ended)


async def release(ctl: Control, held: list[Listener]) -> Released:
    """Let the held run go on, probing `GET /healthz`, until every listener's stream ended."""

    async def let_go() -> int:
        await ctl.start()
        return await finish(held)

    return await _probed(ctl, let_go)


async def _probed(ctl: Control, work: Callable[[], Awaitable[int]]) -> Released:
    """Run `work` (it returns the token events delivered) while probing `GET /healthz`."""
    before = await ctl.stats(reset_lag=True)
    began = time.perf_counter()
    ended = asyncio.create_task(work())
    probes = await probe_health(ctl, until=ended)
    took = time.perf_counter() - began
    after = await ctl.stats()
    return Released(took, after.cpu_s - before.cpu_s, after.lag_max_ms, probes, ended.result())


async def probe_health(
    ctl: Control, *, seconds: float = math.inf, until: asyncio.Task[int] | None = None
) -> list[float]:
    """Milliseconds per `GET /healthz`, one every PROBE_EVERY_S for `seconds` or `until` ends
    (at least one; then `until`'s own result or error)."""
    took: list[float] = []
    ends = time.perf_counter() + seconds
    while not took or (time.perf_counter() < ends and (until is None or not until.done())):
        began = time.perf_counter()
        await ctl.healthz()
        took.append((time.perf_counter() - began) * 1e3)
        pause = max(0.0, PROBE_EVERY_S - (time.perf_counter() - began))
        if until is None:
            await asyncio.sleep(pause)
        else:
            await asyncio.wait([until], timeout=pause)
    if until is not None:
        await until
    return took
