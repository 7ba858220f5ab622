"""Cluster benchmark: cluster mode (Redis + PostgreSQL, API nodes and executors) beside one process.

Two measurements, the modes side by side in one run: (1) one run, 100 listeners: CPU per
delivered event on an API node, and the latency a cluster adds (a listener on an API-only
node against a reference listener on the executing node, same event, same clock); (2) 100
concurrent runs through two executors against one process executing all 100.
Run `python bench/cluster_bench.py --help`; bench/README.md ("Cluster mode") explains it.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp
import asyncpg
import redis.asyncio as aioredis
from harness import announce_machine, parse_flags, raise_fd_limit, save_json
from measure import percentile
from relay_procs import LINE_LIMIT, Proc, _child_setup, cpu_sample, free_port, started, stop

BENCH_DIR: Final = Path(__file__).resolve().parent
HOST: Final = "127.0.0.1"
PG_ADMIN: Final = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL: Final = "redis://127.0.0.1:6379/0"
TOTAL_TIMEOUT_S: Final = 300.0
ROUND_TIMEOUT_S: Final = 60.0
CHILD_FLAG: Final = "--listener-child"
#: The issue's targets.
CPU_RATIO_TARGET: Final = 2.0
ADDED_P99_TARGET_MS: Final = 5.0
QUESTION: Final = "How does a token relay stream each token event to its listeners in cluster mode?"
#: Three small documents; the builtin model answers the question from them in 103 tokens.
CORPUS: Final = {
    "relay.txt": "A token relay reads a model's streamed answer and forwards each token to every "
    "listener as a server-sent event, as soon as the token arrives. The relay keeps each event "
    "in a log, so a listener that joins late reads what it missed and then follows the live "
    "stream.",
    "cluster.txt": "In cluster mode, the process that executes a run publishes each token event "
    "to Redis, and every API node follows the run and streams the events to its listeners. An "
    "API node reads each run's live events with one blocking read, however many listeners the "
    "run has on that node.",
    "latency.txt": "Stream latency is the time from the executor emitting a token event to a "
    "listener reading it; the publish to Redis and the follower's read add to it. Listeners on "
    "the executing node read each event directly from the run's hub.",
}
#: `id: <run>:<seq>` then `event: <name>`: the start of every event on the wire.
EVENT_RE: Final = re.compile(rb"id: [^:\n]+:(\d+)\nevent: (\w+)\n")


@dataclass(frozen=True, slots=True)
class Params:
    """How big the measurements are."""

    fanout_rounds: int = 6
    listeners: int = 100
    token_delay_ms: float = 5.0
    tput_rounds: int = 3
    tput_runs: int = 100
    tput_delay_ms: float = 0.0


FULL: Final = Params()
QUICK: Final = Params(fanout_rounds=2, tput_rounds=1, tput_runs=30)


# --- listeners: a lean recording protocol, in the child process and for the reference ----------


class Recorder(asyncio.Protocol):
    """One SSE response on a raw HTTP/1.1 connection; every read kept with its arrival time."""

    def __init__(self, path: str) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        self.chunks: list[tuple[float, bytes]] = []
        self.first = asyncio.Event()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.chunks.append((time.monotonic(), data))
        if not self.first.is_set() and b"\nevent: " in data:
            self.first.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def summary(self) -> dict[str, Any]:
        """Each event as [seq, name, arrival]; the last seq of the first read; done's status."""
        raw = b"".join(data for _, data in self.chunks)
        ends, total = [], 0
        for _, data in self.chunks:
            total += len(data)
            ends.append(total)
        events: list[list[Any]] = []
        done = None
        for match in EVENT_RE.finditer(raw):
            end = raw.find(b"\n\n", match.end())
            if end < 0:
                break
            chunk = bisect.bisect_right(ends, end + 1)
            seq, name = int(match.group(1)), match.group(2).decode()
            events.append([seq, name, self.chunks[min(chunk, len(ends) - 1)][0]])
            if name == "done":
                data = raw[match.end() : end].partition(b"data: ")[2]
                done = json.loads(data).get("status")
        # The first read with events holds the catch-up; only later events come live.
        first_seq = max((s for s, _, t in events if t == events[0][2]), default=0)
        return {
            "ok": raw.startswith(b"HTTP/1.1 200 "),
            "events": events,
            "first_seq": first_seq,
            "done": done,
        }


async def record_all(targets: list[list[Any]]) -> tuple[list[Recorder], list[int]]:
    """Open every listener of `targets` ([port, path, count] each) at once."""
    loop = asyncio.get_running_loop()
    opening, groups = [], []
    for index, (port, path, count) in enumerate(targets):
        for _ in range(count):
            opening.append(loop.create_connection(lambda p=path: Recorder(p), HOST, port))
            groups.append(index)
    opened = await asyncio.gather(*opening)
    return [recorder for _, recorder in opened], groups


async def child_main() -> None:
    """The listener process: one job per stdin line, two answer lines per job on stdout."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=LINE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    while line := await reader.readline():
        job = json.loads(line)
        recorders, groups = await record_all(job["targets"])
        async with asyncio.timeout(ROUND_TIMEOUT_S):
            await asyncio.gather(*(r.first.wait() for r in recorders))
            out.write(json.dumps({"attached": time.monotonic()}).encode() + b"\n")
            out.flush()
            await asyncio.gather(*(r.closed for r in recorders))
        answer = [{"group": g, **r.summary()} for r, g in zip(recorders, groups, strict=True)]
        out.write(json.dumps({"listeners": answer}).encode() + b"\n")
        out.flush()


class Listeners:
    """The driver's handle on the listener process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def start(self, targets: list[tuple[int, str, int]]) -> None:
        """Open the listeners; returns once each has read its first event."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(json.dumps({"targets": targets}).encode() + b"\n")
        await stdin.drain()
        json.loads(await stdout.readline())

    async def results(self) -> list[dict[str, Any]]:
        """Every listener's summary, once every stream has ended."""
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError("the listener process died; see its log")
        listeners: list[dict[str, Any]] = json.loads(line)["listeners"]
        bad = sum(not listener["ok"] for listener in listeners)
        if bad:
            raise RuntimeError(f"{bad} of {len(listeners)} listeners did not get a 200")
        return listeners


@asynccontextmanager
async def listener_process(log: Path) -> Any:
    """The listener child process (python bench/cluster_bench.py --listener-child)."""
    with log.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(BENCH_DIR / "cluster_bench.py"),
            CHILD_FLAG,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            limit=LINE_LIMIT,
            preexec_fn=_child_setup(None),
        )
    try:
        yield Listeners(process)
    finally:
        await stop(process)


# --- the services ---------------------------------------------------------------------------


@dataclass(slots=True)
class Setup:
    """Where the bench keeps its files, databases and Redis prefixes (all removed at the end)."""

    tmp: Path
    tag: str
    databases: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)

    async def database(self, name: str) -> str:
        """A fresh database; its URL."""
        db = f"cluster_bench_{self.tag}_{name}"
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{db}"')
            await conn.execute(f'CREATE DATABASE "{db}"')
        finally:
            await conn.close()
        self.databases.append(db)
        return f"postgresql://postgres@127.0.0.1:5432/{db}"

    def prefix(self, name: str) -> str:
        """A Redis prefix no other cluster uses."""
        prefix = f"cluster-bench-{self.tag}-{name}:"
        self.prefixes.append(prefix)
        return prefix

    async def clean(self) -> None:
        """Drop the databases, delete the Redis keys."""
        conn = await asyncpg.connect(PG_ADMIN)
        try:
            for db in self.databases:
                await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await conn.close()
        redis = aioredis.Redis.from_url(REDIS_URL)
        try:
            for prefix in self.prefixes:
                keys = [key async for key in redis.scan_iter(match=f"{prefix}*", count=1000)]
                for start in range(0, len(keys), 500):
                    await redis.delete(*keys[start : start + 500])
        finally:
            await redis.aclose()


def command(
    setup: Setup,
    name: str,
    *,
    role: str,
    delay_ms: float,
    store: str,
    database: str | None = None,
    prefix: str | None = None,
    port: int | None = None,
    health_port: int | None = None,
) -> list[str]:
    """`research-service serve|worker` with this bench's corpus and limits."""
    args = [sys.executable, "-m", "research_service"]
    args += ["worker"] if role == "worker" else ["serve"]
    args += [
        f"--host={HOST}",
        f"--data-dir={setup.tmp / f'data-{name}'}",
        f"--corpus={setup.tmp / 'corpus'}",
        f"--store={store}",
        f"--token-delay-ms={delay_ms:g}",
        "--max-active-runs=100",
        "--log-level=WARNING",
    ]
    if port is not None:
        args.append(f"--port={port}")
    if database is not None:
        args.append(f"--database-url={database}")
    if prefix is not None:
        args += [f"--redis-url={REDIS_URL}", f"--redis-prefix={prefix}"]
    if role == "api":
        args.append("--no-execute")
    if health_port is not None:
        args.append(f"--health-port={health_port}")
    return args


async def service(
    stack: AsyncExitStack, setup: Setup, name: str, role: str = "serve", **options: Any
) -> Proc:
    """Start one research-service process; it stops when `stack` unwinds."""
    port = free_port()
    if role == "worker":
        args = command(setup, name, role=role, health_port=port, **options)
    else:
        args = command(setup, name, role=role, port=port, **options)
    log = setup.tmp / f"{name}.log"
    return await stack.enter_async_context(started(args, log=log, cpu=None, port=port))


# --- measurement 1: one run, 100 listeners ----------------------------------------------------


@dataclass(slots=True)
class Fanout:
    """One mode's processes for measurement 1, and what it collected."""

    label: str
    post: Proc  # where runs are created
    reference: Proc  # the executing process, where the reference listener attaches
    api: list[Proc]  # where the listeners attach (and whose CPU is per delivered event)
    executor: Proc | None = None  # executes, apart from `api` (cluster mode)
    api_cpu_s: float = 0.0
    api_events: int = 0
    executor_cpu_s: float = 0.0
    redis_cpu_s: float = 0.0
    runs: int = 0
    added_ms: list[float] = field(default_factory=list)
    spread_ms: list[float] = field(default_factory=list)
    counted: int = 0
    delivered_tokens: int = 0


async def post_run(session: aiohttp.ClientSession, port: int) -> str:
    """Create a run; its events path."""
    url = f"http://{HOST}:{port}/v1/runs"
    async with session.post(url, json={"question": QUESTION}) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"POST /v1/runs on {port}: {response.status} {body}")
        return str(body["events_url"])


def cpu_s(proc: Proc) -> float:
    """A process's CPU seconds so far (every thread's run time)."""
    return sum(cpu_sample(proc.pid).ns_by_thread.values()) / 1e9


async def redis_cpu_s(redis: aioredis.Redis) -> float:
    """The Redis server's CPU seconds so far."""
    info = await redis.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def fanout_round(
    mode: Fanout,
    *,
    session: aiohttp.ClientSession,
    listeners: Listeners,
    redis: aioredis.Redis,
    count: int,
) -> None:
    """One run, `count` listeners spread over the mode's API processes, one reference."""
    api_0 = [cpu_s(p) for p in mode.api]
    exe_0 = cpu_s(mode.executor) if mode.executor else 0.0
    redis_0 = await redis_cpu_s(redis)
    path = await post_run(session, mode.post.port)
    share = count // len(mode.api)
    await listeners.start([(p.port, path, share) for p in mode.api])
    # Only now: the run is executing (its events reached the API nodes), so the reference
    # listener reads it from the executing process's own hub, never through a follower.
    loop = asyncio.get_running_loop()
    _, ref = await loop.create_connection(lambda: Recorder(path), HOST, mode.reference.port)
    async with asyncio.timeout(ROUND_TIMEOUT_S):
        found = await listeners.results()
        await ref.closed
    mode.api_cpu_s += sum(cpu_s(p) for p in mode.api) - sum(api_0)
    if mode.executor:
        mode.executor_cpu_s += cpu_s(mode.executor) - exe_0
    mode.redis_cpu_s += await redis_cpu_s(redis) - redis_0
    mode.runs += 1
    reference = ref.summary()
    if reference["done"] != "completed" or any(f["done"] != "completed" for f in found):
        raise RuntimeError(f"{mode.label}: a run did not complete: {reference['done']}")
    mode.api_events += sum(len(f["events"]) for f in found)
    if mode.executor is None:  # the reference listener is on the API process too
        mode.api_events += len(reference["events"])
    ref_at = {seq: t for seq, name, t in reference["events"] if name == "token"}
    by_seq: dict[int, list[float]] = {}
    for listener in found:
        mode.delivered_tokens += sum(name == "token" for _, name, _ in listener["events"])
        floor = max(reference["first_seq"], listener["first_seq"])
        for seq, name, t in listener["events"]:
            if name == "token" and seq > floor and seq in ref_at:
                mode.added_ms.append((t - ref_at[seq]) * 1000)
                by_seq.setdefault(seq, []).append(t)
    for times in by_seq.values():
        first = min(times)
        mode.spread_ms.extend((t - first) * 1000 for t in times)
    mode.counted += sum(len(times) for times in by_seq.values())


async def fanout_phase(
    stack: AsyncExitStack,
    setup: Setup,
    *,
    params: Params,
    session: aiohttp.ClientSession,
    listeners: Listeners,
    redis: aioredis.Redis,
) -> list[Fanout]:
    """Measurement 1: the modes take turns, run by run."""
    delay = params.token_delay_ms
    memory = await service(stack, setup, "single-memory", delay_ms=delay, store="memory")
    pg_url = await setup.database("single")
    single = await service(
        stack, setup, "single-pg", delay_ms=delay, store="postgres", database=pg_url
    )
    db, prefix = await setup.database("fanout"), setup.prefix("fanout")
    cluster = {"delay_ms": delay, "store": "postgres", "database": db, "prefix": prefix}
    executing = await service(stack, setup, "exec", **cluster)
    api_1, api_2 = await asyncio.gather(
        service(stack, setup, "api-1", role="api", **cluster),
        service(stack, setup, "api-2", role="api", **cluster),
    )
    modes = [
        Fanout("single process, --store memory", memory, memory, [memory]),
        Fanout("single process, --store postgres", single, single, [single]),
        Fanout("cluster: 2 API nodes + 1 executor", api_1, executing, [api_1, api_2], executing),
    ]
    for mode in modes:  # warm-up, not counted
        await fanout_round(mode, session=session, listeners=listeners, redis=redis, count=10)
    modes = [Fanout(m.label, m.post, m.reference, m.api, m.executor) for m in modes]
    for _ in range(params.fanout_rounds):
        for mode in modes:
            await fanout_round(
                mode, session=session, listeners=listeners, redis=redis, count=params.listeners
            )
    return modes


# --- measurement 2: throughput ----------------------------------------------------------------


@dataclass(slots=True)
class Throughput:
    """One mode's processes for measurement 2, and its rounds."""

    label: str
    api: Proc
    procs: list[Proc]
    walls: list[float] = field(default_factory=list)
    events: list[int] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)
    #: Per round: CPU seconds of each of `procs`.
    split: list[list[float]] = field(default_factory=list)
    #: Per round: each run's first event read, seconds after the first POST, sorted.
    starts: list[list[float]] = field(default_factory=list)


async def tput_round(
    mode: Throughput, *, session: aiohttp.ClientSession, listeners: Listeners, runs: int
) -> None:
    """`runs` runs posted at once, one listener each: first POST to the last `done` read."""
    cpu_0 = [cpu_s(p) for p in mode.procs]
    began = time.monotonic()
    paths = await asyncio.gather(*(post_run(session, mode.api.port) for _ in range(runs)))
    await listeners.start([(mode.api.port, path, 1) for path in paths])
    async with asyncio.timeout(ROUND_TIMEOUT_S):
        found = await listeners.results()
    not_completed = [f["done"] for f in found if f["done"] != "completed"]
    if not_completed:
        raise RuntimeError(f"{mode.label}: {len(not_completed)} runs ended {not_completed[:3]}")
    last_done = max(f["events"][-1][2] for f in found)
    mode.walls.append(last_done - began)
    mode.starts.append(sorted(f["events"][0][2] - began for f in found))
    mode.events.append(sum(len(f["events"]) for f in found))
    split = [cpu_s(p) - c for p, c in zip(mode.procs, cpu_0, strict=True)]
    mode.split.append(split)
    mode.cpu_s.append(sum(split))


async def tput_phase(
    stack: AsyncExitStack,
    setup: Setup,
    params: Params,
    session: aiohttp.ClientSession,
    listeners: Listeners,
) -> list[Throughput]:
    """Measurement 2: the modes take turns, round by round."""
    delay = params.tput_delay_ms
    pg_url = await setup.database("tput_single")
    single = await service(
        stack, setup, "tput-single", delay_ms=delay, store="postgres", database=pg_url
    )
    db, prefix = await setup.database("tput"), setup.prefix("tput")
    cluster = {"delay_ms": delay, "store": "postgres", "database": db, "prefix": prefix}
    api = await service(stack, setup, "tput-api", role="api", **cluster)
    workers = await asyncio.gather(
        service(stack, setup, "tput-worker-1", role="worker", **cluster),
        service(stack, setup, "tput-worker-2", role="worker", **cluster),
    )
    modes = [
        Throughput("single process, --store postgres", single, [single]),
        Throughput("cluster: 1 API node + 2 workers", api, [api, *workers]),
    ]
    for mode in modes:  # warm-up, not counted
        await tput_round(mode, session=session, listeners=listeners, runs=10)
    modes = [Throughput(m.label, m.api, m.procs) for m in modes]
    for _ in range(params.tput_rounds):
        for mode in modes:
            await asyncio.sleep(0.5)  # the previous round's slots are given back
            await tput_round(mode, session=session, listeners=listeners, runs=params.tput_runs)
    return modes


# --- the report ---------------------------------------------------------------------------


def _pct(values: list[float], pct: int) -> float:
    return percentile(values, pct) if len(values) > 1 else float("nan")


def fanout_table(modes: list[Fanout], params: Params) -> tuple[str, dict[str, Any]]:
    """Measurement 1's table and figures."""
    rows, figures = [], {}
    for mode in modes:
        f = {
            "runs": mode.runs,
            "api_cpu_us_per_event": mode.api_cpu_s / mode.api_events * 1e6,
            "api_events": mode.api_events,
            "executor_cpu_ms_per_run": mode.executor_cpu_s / mode.runs * 1e3
            if mode.executor
            else None,
            "redis_cpu_us_per_event": mode.redis_cpu_s / mode.api_events * 1e6,
            "added_p50_ms": _pct(mode.added_ms, 50),
            "added_p99_ms": _pct(mode.added_ms, 99),
            "added_max_ms": max(mode.added_ms, default=float("nan")),
            "spread_p50_ms": _pct(mode.spread_ms, 50),
            "spread_p99_ms": _pct(mode.spread_ms, 99),
            "tokens_counted": mode.counted,
            "tokens_delivered": mode.delivered_tokens,
        }
        figures[mode.label] = f
    single = figures[modes[1].label]["api_cpu_us_per_event"]
    cluster = figures[modes[2].label]
    ratio = cluster["api_cpu_us_per_event"] / single
    header = (
        f"1. One run at a time ({params.fanout_rounds} runs per mode, {params.listeners} "
        f"listeners each, --token-delay-ms {params.token_delay_ms:g})"
    )
    rows.append(
        "| mode | CPU µs / delivered event (serving process) | executor CPU ms / run "
        "| Redis CPU µs / event | token read - reference read, p50 / p99 / max ms "
        "| spread across listeners p50 / p99 ms | tokens timed |"
    )
    rows.append("|---|---:|---:|---:|---:|---:|---:|")
    for label, f in figures.items():
        exe = f["executor_cpu_ms_per_run"]
        rows.append(
            f"| {label} | {f['api_cpu_us_per_event']:.1f} | "
            f"{'-' if exe is None else f'{exe:.1f}'} | {f['redis_cpu_us_per_event']:.2f} | "
            f"{f['added_p50_ms']:.2f} / {f['added_p99_ms']:.2f} / {f['added_max_ms']:.1f} | "
            f"{f['spread_p50_ms']:.2f} / {f['spread_p99_ms']:.2f} | "
            f"{f['tokens_counted']:,} of {f['tokens_delivered']:,} |"
        )
    added_floor = figures[modes[1].label]["added_p99_ms"]
    lines = [
        header,
        "",
        *rows,
        "",
        f"API-node CPU per event, cluster ÷ single process (postgres): {ratio:.2f} "
        f"(target ≤ {CPU_RATIO_TARGET:g}: {'met' if ratio <= CPU_RATIO_TARGET else 'NOT met'}). "
        "The single process also executes the run; the cluster's executor is apart.",
        f"Cluster added latency p99 {cluster['added_p99_ms']:.2f} ms (target < "
        f"{ADDED_P99_TARGET_MS:g} ms: "
        f"{'met' if cluster['added_p99_ms'] < ADDED_P99_TARGET_MS else 'NOT met'}); the same "
        f"figure in one process, where nothing is added, is {added_floor:.2f} ms: the "
        "measurement's floor.",
    ]
    figures["cpu_ratio"] = ratio
    return "\n".join(lines), figures


def tput_table(modes: list[Throughput], params: Params) -> tuple[str, dict[str, Any]]:
    """Measurement 2's table and figures."""
    rows = [
        f"2. Throughput: {params.tput_runs} runs posted at once, one listener each, "
        f"--token-delay-ms {params.tput_delay_ms:g}, median of {params.tput_rounds} rounds",
        "",
        "| mode | wall s (first POST → last done) | runs/s | events/s "
        "| service CPU µs / event (PostgreSQL, Redis not counted) "
        "| of which: serving process / executors | first event of a run after the first POST, "
        "p50 / max s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    figures = {}
    for mode in modes:
        wall = statistics.median(mode.walls)
        events = statistics.median(mode.events)
        cpu = statistics.median(c / e for c, e in zip(mode.cpu_s, mode.events, strict=True))
        figures[mode.label] = {
            "wall_s": wall,
            "runs_per_s": params.tput_runs / wall,
            "events_per_s": events / wall,
            "cpu_us_per_event": cpu * 1e6,
            "walls": mode.walls,
            "api_cpu_us_per_event": statistics.median(
                sp[0] / e for sp, e in zip(mode.split, mode.events, strict=True)
            )
            * 1e6,
            "start_p50_s": statistics.median(statistics.median(s) for s in mode.starts),
            "start_max_s": statistics.median(max(s) for s in mode.starts),
        }
        f = figures[mode.label]
        rest = f["cpu_us_per_event"] - f["api_cpu_us_per_event"]
        split = f"{f['api_cpu_us_per_event']:.1f} / {rest:.1f}" if len(mode.procs) > 1 else "-"
        rows.append(
            f"| {mode.label} | {wall:.2f} | {f['runs_per_s']:.1f} | {f['events_per_s']:,.0f} | "
            f"{f['cpu_us_per_event']:.1f} | {split} | "
            f"{f['start_p50_s']:.2f} / {f['start_max_s']:.2f} |"
        )
    return "\n".join(rows), figures


# --- entry point ---------------------------------------------------------------------------


def write_corpus(folder: Path) -> None:
    """The small corpus every executing process searches."""
    folder.mkdir()
    for name, text in CORPUS.items():
        (folder / name).write_text(text + "\n")


async def run(params: Params) -> tuple[str, dict[str, Any]]:
    """The whole bench; every process, database and Redis key is gone when it returns."""
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as name:
        setup = Setup(Path(name), tag=f"{os.getpid()}")
        write_corpus(setup.tmp / "corpus")
        try:
            async with AsyncExitStack() as stack, asyncio.timeout(TOTAL_TIMEOUT_S):
                connector = aiohttp.TCPConnector(limit=0)
                session = await stack.enter_async_context(
                    aiohttp.ClientSession(connector=connector)
                )
                redis = aioredis.Redis.from_url(REDIS_URL)
                stack.push_async_callback(redis.aclose)
                listeners = await stack.enter_async_context(
                    listener_process(setup.tmp / "listeners.log")
                )
                began = time.perf_counter()
                async with AsyncExitStack() as phase:
                    fanout = await fanout_phase(
                        phase,
                        setup,
                        params=params,
                        session=session,
                        listeners=listeners,
                        redis=redis,
                    )
                print(
                    f"one run, 100 listeners: {time.perf_counter() - began:.1f} s", file=sys.stderr
                )
                began = time.perf_counter()
                async with AsyncExitStack() as phase:
                    tput = await tput_phase(phase, setup, params, session, listeners)
                print(f"throughput: {time.perf_counter() - began:.1f} s", file=sys.stderr)
        finally:
            await setup.clean()
    text_1, figures_1 = fanout_table(fanout, params)
    text_2, figures_2 = tput_table(tput, params)
    return f"{text_1}\n\n{text_2}", {"fanout": figures_1, "throughput": figures_2}


def main(argv: Iterable[str] | None = None) -> int:
    """Parse flags, run the bench, print the tables, optionally save JSON."""
    args = parse_flags(__doc__, list(argv) if argv is not None else None, pinning=False)
    params = QUICK if args.quick else FULL
    raise_fd_limit()
    info = announce_machine()
    began = time.perf_counter()
    text, figures = asyncio.run(run(params))
    print(f"cluster bench: {time.perf_counter() - began:.1f} s", file=sys.stderr)
    print(text)
    save_json(args.json, {"machine": info, "params": asdict(params), "results": figures})
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == [CHILD_FLAG]:
        asyncio.run(child_main())
        sys.exit(0)
    sys.exit(main())
