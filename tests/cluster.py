"""A cluster of real processes for a test: API nodes and workers on a real Redis and PostgreSQL.

Each test gets its own PostgreSQL schema (tests/postgres.py) and its own Redis key prefix,
deleted afterwards. The Redis is the one on 127.0.0.1:6379 (or RESEARCH_TEST_REDIS_URL); a
test that restarts Redis starts a `redis-server` of its own. Without one the tests skip
with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import httpx
import pytest
import redis.asyncio as aioredis

from research_service.cluster.redis_link import Keys
from tests.cli_process import child_env
from tests.loopback import PORT_ATTEMPTS, PORT_TAKEN, PortTaken, free_port

REDIS_URL: Final = os.environ.get("RESEARCH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CORPUS: Final = Path(__file__).parent / "data" / "corpus"
SERVE_READY: Final = re.compile(rb"Running on (http://[^ \n]+)")
WORKER_READY: Final = re.compile(rb"worker (\S+): taking runs")
NODE_NAME: Final = re.compile(rb"cluster node (\S+) ")
START_TIMEOUT_S: Final = 60.0


def _unavailable(what: str, exc: BaseException | str) -> None:
    reason = f"{what} is not available ({exc!r})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run the cluster tests")
    pytest.skip(reason)


async def redis_or_skip(url: str = REDIS_URL) -> aioredis.Redis:
    """A client of the test Redis; skip (fail under CI) when it does not answer."""
    client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        await client.aclose()
        _unavailable(f"Redis at {url}", exc)
    return client


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Delete every key under `prefix`."""
    async for key in client.scan_iter(match=f"{prefix}*", count=500):
        await client.delete(key)


@contextlib.asynccontextmanager
async def own_prefix(name: str) -> AsyncIterator[tuple[aioredis.Redis, Keys]]:
    """A client of the test Redis and keys under a prefix of the test's own, deleted after."""
    client = await redis_or_skip()
    keys = Keys(f"test-{name}-{secrets.token_hex(4)}:")
    try:
        yield client, keys
    finally:
        await delete_prefix(client, keys.prefix)
        await client.aclose()


@dataclass
class Node:
    """One process of the cluster: `serve` (an API node) or `worker`."""

    kind: str
    process: asyncio.subprocess.Process
    log: bytearray
    base: str = ""
    name: str = ""
    args: tuple[str, ...] = ()
    _grew: asyncio.Event = field(default_factory=asyncio.Event)
    _drain: asyncio.Task[None] | None = None

    async def wait_log(
        self, pattern: bytes, *, since: int = 0, timeout: float = 30
    ) -> re.Match[bytes]:
        """Wait until the node's log (from byte `since` on) matches `pattern`."""
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while (match := regex.search(self.log, since)) is None:
                # Its log has ended (stderr closed): it has exited, or is about to, without
                # saying it. Waiting on would only wait out the timeout: say why at once.
                if self._drain is not None and self._drain.done():
                    code = await self.process.wait()
                    raise AssertionError(f"{self.kind} exited ({code}):\n{self.log.decode()}")
                self._grew.clear()
                await self._grew.wait()
        return match

    async def executed(self, run_id: str, *, timeout: float = 30) -> int:
        """How many times the node's log says it executed `run_id`, once it has said so."""
        line = _executing(run_id)
        await self.wait_log(re.escape(line), timeout=timeout)
        return self.log.count(line)

    def signal(self, signum: int) -> None:
        """Send `signum` to the process."""
        self.process.send_signal(signum)

    async def wait(self, timeout: float = 30) -> int:
        """Wait for the process to exit; its exit status."""
        async with asyncio.timeout(timeout):
            code = await self.process.wait()
            if self._drain is not None:
                await self._drain
        return code


async def executions(nodes: list[Node], run_id: str, *, timeout: float = 30) -> int:
    """How many times these nodes' logs say they executed `run_id`, once one of them has."""
    waits = [asyncio.ensure_future(node.executed(run_id, timeout=timeout)) for node in nodes]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    return sum(node.log.count(_executing(run_id)) for node in nodes)


def _executing(run_id: str) -> bytes:
    """The line a node logs as it starts executing `run_id`."""
    return f"run {run_id}: executing here".encode()


@dataclass
class Cluster:
    """The settings every node shares, and the nodes started so far."""

    database_url: str
    redis_url: str
    prefix: str
    folder: Path
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)

    def node_env(self, **extra: str) -> dict[str, str]:
        """The environment of a node: the shared settings, then `extra`."""
        data_dir = self.folder / f"node-{len(self.nodes)}-{secrets.token_hex(2)}"
        shared = {
            "RESEARCH_STORE": "postgres",
            "RESEARCH_DATABASE_URL": self.database_url,
            "RESEARCH_REDIS_URL": self.redis_url,
            "RESEARCH_REDIS_PREFIX": self.prefix,
            "RESEARCH_DATA_DIR": str(data_dir),
            "RESEARCH_CORPUS": str(CORPUS),
            "RESEARCH_LEASE_S": "2",
            "RESEARCH_HEARTBEAT_S": "1",
        }
        return child_env(**{**shared, **self.env, **extra})

    async def api(self, *args: str, port: int = 0, **env: str) -> Node:
        """An API-only node (serve --no-execute) unless `args` say otherwise.

        Without `port` the node binds one the kernel picks (`--port 0`) and its log says which:
        a port picked here and released could be taken before the node binds it (two nodes
        started together were once handed the same one).
        """
        flags = ("--no-execute", *args) if "--execute" not in args else args
        return await self._start("serve", "--port", str(port), *flags, env=env)

    async def worker(self, *args: str, ready: bool = True, **env: str) -> Node:
        """A worker (executes runs, serves no API), once it takes runs unless not `ready`."""
        return await self._start("worker", *args, env=env, ready=ready)

    async def restart(self, node: Node) -> Node:
        """Start `node` again with the same arguments (after it exited); an API node on the
        port it had, so its clients find it where it was."""
        args = node.args
        if node.kind == "serve":
            at = args.index("--port") + 1
            args = (*args[:at], str(urlsplit(node.base).port), *args[at + 1 :])
        return await self._start(node.kind, *args, env={})

    async def _start(self, kind: str, *args: str, env: dict[str, str], ready: bool = True) -> Node:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "research_service",
            kind,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=self.node_env(**env),
        )
        node = Node(kind, process, bytearray(), args=args)
        node._drain = asyncio.create_task(_read_log(process, node))
        self.nodes.append(node)
        if not ready:
            return node
        said = SERVE_READY if kind == "serve" else WORKER_READY
        match = await node.wait_log(said.pattern, timeout=START_TIMEOUT_S)
        if kind == "serve":
            node.base = match[1].decode()
        name = NODE_NAME.search(node.log)
        node.name = name[1].decode() if name else ""
        return node

    async def stop_all(self) -> None:
        """Kill what still runs."""
        for node in self.nodes:
            if node.process.returncode is None:
                node.process.kill()
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await node.wait(10)


async def _read_log(process: asyncio.subprocess.Process, node: Node) -> None:
    assert process.stderr is not None
    while line := await process.stderr.readline():
        node.log += line
        node._grew.set()
    node._grew.set()


@contextlib.asynccontextmanager
async def cluster_on(
    database_url: str, folder: Path, *, redis_url: str = REDIS_URL, **env: str
) -> AsyncIterator[Cluster]:
    """A cluster on its own Redis prefix (deleted after) and the given database."""
    client = await redis_or_skip(redis_url)
    prefix = f"test-{secrets.token_hex(4)}:"
    cluster = Cluster(database_url, redis_url, prefix, folder, env=env)
    try:
        yield cluster
    finally:
        await cluster.stop_all()
        with contextlib.suppress(OSError, aioredis.RedisError):
            await delete_prefix(client, prefix)
        await client.aclose()


@dataclass
class RedisServer:
    """A `redis-server` of the test's own, which the test may stop and start again."""

    port: int
    folder: Path
    process: asyncio.subprocess.Process | None = None

    @classmethod
    async def started(cls, folder: Path) -> RedisServer:
        """A server started on a port picked here; on another if that one was taken first."""
        for attempt in range(1, PORT_ATTEMPTS + 1):
            server = cls(free_port(), folder)
            try:
                await server.start()
            except PortTaken:
                if attempt == PORT_ATTEMPTS:
                    raise
            else:
                break
        return server

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        """Start it on `port` (again, after `stop`); raises PortTaken if that port is taken."""
        binary = shutil.which("redis-server")
        if binary is None:
            _unavailable("redis-server", "not installed (apt-get install redis-server)")
        assert binary is not None
        self.process = await asyncio.create_subprocess_exec(
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.folder),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert self.process.stdout is not None
        said = bytearray()
        async with asyncio.timeout(20):
            while b"Ready to accept connections" not in said:
                line = await self.process.stdout.readline()
                if not line:
                    await self.process.wait()
                    if PORT_TAKEN in said:
                        raise PortTaken(said.decode())
                    raise AssertionError(f"redis-server did not start:\n{said.decode()}")
                said += line
        # Keep its output flowing so it never blocks on a full pipe.
        asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        process = self.process
        assert process is not None
        assert process.stdout is not None
        while await process.stdout.readline():
            pass

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()


async def post_run(client: httpx.AsyncClient, base: str, question: str, **options: Any) -> str:
    """Create a run on the node at `base`; its id."""
    body: dict[str, Any] = {"question": question}
    if options:
        body["options"] = options
    response = await client.post(f"{base}/v1/runs", json=body)
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    return run_id


def seqs(ids: list[str]) -> list[int]:
    """The seq numbers of event ids `run:seq`."""
    return [int(event_id.rsplit(":", 1)[1]) for event_id in ids]


@dataclass
class Followed:
    """Everything a reconnecting listener received, over however many connections."""

    events: list[Any] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    grew: asyncio.Event = field(default_factory=asyncio.Event)

    async def reach(self, count: int, timeout: float = 30) -> None:
        """Wait until `count` events have arrived."""
        async with asyncio.timeout(timeout):
            while len(self.events) < count:
                self.grew.clear()
                await self.grew.wait()

    @property
    def ids(self) -> list[str]:
        return [event.id for event in self.events]

    @property
    def last(self) -> Any:
        return self.events[-1] if self.events else None


async def follow(
    client: httpx.AsyncClient,
    bases: list[str],
    run_id: str,
    *,
    timeout: float = 60,
    followed: Followed | None = None,
) -> Followed:
    """Listen to the run until its `done`, as EventSource does.

    On a cut it reconnects with Last-Event-ID, here to the next node in `bases` (a node that
    is down is skipped). Events are added to `followed` as they arrive.
    """
    from tests.sse import listen

    got = followed if followed is not None else Followed()
    turn = 0
    async with asyncio.timeout(timeout):
        while True:
            base = bases[turn % len(bases)]
            turn += 1
            last = got.last.id if got.events else None
            got.connections.append(base)

            def keep(event: Any) -> bool:
                got.events.append(event)  # as it arrives: a test can watch the progress
                got.grew.set()
                return False

            try:
                received = await listen(
                    client,
                    f"{base}/v1/runs/{run_id}/events",
                    last_event_id=last,
                    stop=keep,
                    timeout=timeout,
                )
            except (httpx.TransportError, httpx.RemoteProtocolError):
                await asyncio.sleep(0.05)  # EventSource's reconnect delay, shortened
                continue
            got.statuses.append(received.status)
            if received.status == 204 or (got.events and got.last.event == "done"):
                return got
            await asyncio.sleep(0.05)


def assert_gap_free(ids: list[str], run_id: str) -> None:
    """The ids are the run's, from seq 1 up, none missing, none twice."""
    assert all(event_id.startswith(f"{run_id}:") for event_id in ids)
    assert seqs(ids) == list(range(1, len(ids) + 1)), seqs(ids)
