"""The relay bench's processes: start one pinned to a core, read its CPU time from /proc."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp

HOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0
HEALTH_POLL_S: Final = 0.05
#: Longest stdout line the bench reads from a process (the fake's stamps are one line).
LINE_LIMIT: Final = 1 << 24
_PR_SET_PDEATHSIG: Final = 1
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers that cannot report theirs)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _child_setup(cpu: int | None) -> Callable[[], None]:
    def setup() -> None:
        # SIGTERM when the bench dies, even by SIGKILL, so no server outlives it.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if cpu is not None:
            # Before exec, so every thread the server starts inherits the core.
            os.sched_setaffinity(0, {cpu})

    return setup


@dataclass(slots=True)
class Proc:
    """A started server process: its pid, port, and the pipes the bench keeps."""

    pid: int
    port: int
    process: asyncio.subprocess.Process


@asynccontextmanager
async def started(
    args: Sequence[str],
    *,
    log: Path,
    cpu: int | None,
    env: Mapping[str, str] | None = None,
    port: int | None = None,
) -> AsyncIterator[Proc]:
    """Run `args`; yield once it listens; stop it on exit.

    Without `port`, the process must print `PORT <n>` first; with it, `GET /healthz` must
    answer 200. The process's stdin stays open for as long as it runs.
    """
    with log.open("ab") as log_file:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_file,
            limit=LINE_LIMIT,
            env=None if env is None else dict(env),
            preexec_fn=_child_setup(cpu),
        )
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            if port is None:
                assert process.stdout is not None
                line = await process.stdout.readline()
                if not line.startswith(b"PORT "):
                    tail = (await asyncio.to_thread(log.read_text))[-2000:]
                    raise RuntimeError(f"{args[:3]} did not start: {tail}")
                port = int(line.split()[1])
            else:
                await _healthy(process, port, log)
        yield Proc(process.pid, port, process)
    finally:
        await stop(process)


async def _healthy(process: asyncio.subprocess.Process, port: int, log: Path) -> None:
    url = f"http://{HOST}:{port}/healthz"
    async with aiohttp.ClientSession() as session:
        while True:
            if process.returncode is not None:
                tail = (await asyncio.to_thread(log.read_text))[-2000:]
                raise RuntimeError(f"server exited with {process.returncode}: {tail}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(HEALTH_POLL_S)


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL if it has not exited after STOP_TIMEOUT_S."""
    if process.returncode is not None:
        return
    if process.stdin is not None:
        process.stdin.close()
    process.terminate()
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()


@dataclass(frozen=True, slots=True)
class CpuSample:
    """A process's CPU time: exact per live thread (schedstat), and in clock ticks (stat)."""

    ns_by_thread: dict[int, int]
    ticks: int

    def since(self, before: CpuSample) -> tuple[float, bool]:
        """Seconds of CPU since `before`, and whether a thread exited in between (then lost)."""
        gone = set(before.ns_by_thread) - set(self.ns_by_thread)
        spent = sum(ns - before.ns_by_thread.get(tid, 0) for tid, ns in self.ns_by_thread.items())
        return spent / 1e9, bool(gone)

    def ticks_since(self, before: CpuSample) -> float:
        """Seconds of CPU since `before` from /proc/<pid>/stat (all threads, 10 ms steps)."""
        return (self.ticks - before.ticks) / _CLOCK_TICKS


def cpu_sample(pid: int) -> CpuSample:
    """Read a process's CPU time from /proc: every thread's run time in ns, and utime+stime."""
    by_thread: dict[int, int] = {}
    for entry in os.scandir(f"/proc/{pid}/task"):
        try:
            with open(f"{entry.path}/schedstat") as file:
                by_thread[int(entry.name)] = int(file.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread exited while we looked
    with open(f"/proc/{pid}/stat") as file:
        # The command name may hold spaces; the fields after its closing parenthesis do not.
        fields = file.read().rpartition(")")[2].split()
    return CpuSample(by_thread, int(fields[11]) + int(fields[12]))


def system_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (user, system, irq, steal ...)."""
    with open("/proc/stat") as file:
        fields = [int(value) for value in file.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _CLOCK_TICKS


def process_s(pid: int) -> float:
    """A process's CPU seconds (utime + stime) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
