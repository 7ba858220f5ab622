"""`research-service serve` as a real child process: start it, read its log, signal it."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).parent / "data" / "corpus"
READY = re.compile(rb"Running on (http://[^ ]+)")


@dataclass
class Served:
    process: asyncio.subprocess.Process
    base: str
    log: bytearray
    port: int = 0
    drain: asyncio.Task[None] | None = None
    _grew: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_log(
        self, pattern: bytes, *, since: int = 0, timeout: float = 30
    ) -> re.Match[bytes]:
        """Wait until the service's log (from byte `since` on) matches `pattern`."""
        regex = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while (match := regex.search(self.log, since)) is None:
                self._grew.clear()
                await self._grew.wait()
        return match


def open_files_limit(soft: int, hard: int) -> Callable[[], None]:
    """A preexec_fn that starts the child with this RLIMIT_NOFILE."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


async def start(
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    preexec_fn: Callable[[], None] | None = None,
    follow: bool = True,
) -> Served:
    """Start the console script and wait for its "Running on" line.

    Its log is then read on as it grows, unless `follow` is False: then nobody reads it (a
    stalled log reader) until `follow_log`.
    """
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "research_service",
        "serve",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=preexec_fn,
    )
    assert process.stderr is not None
    log = bytearray()
    async with asyncio.timeout(timeout):
        while (line := await process.stderr.readline()) and not READY.search(line):
            log += line
    match = READY.search(line)
    assert match, f"service did not start:\n{log.decode()}"
    log += line
    served = Served(process, match[1].decode(), log)
    served.port = int(served.base.rsplit(":", 1)[1].strip("/"))
    if follow:
        follow_log(served)
    return served


def follow_log(served: Served) -> None:
    """Read the service's log on as it grows (a pipe nobody reads fills up after 64 KiB)."""
    assert served.process.stderr is not None
    served.drain = asyncio.create_task(_drain(served.process.stderr, served))


async def _drain(stream: asyncio.StreamReader, served: Served) -> None:
    while line := await stream.readline():
        served.log += line
        served._grew.set()
    served._grew.set()


async def stop(served: Served, signum: int = signal.SIGINT, timeout: float = 20) -> int:
    served.process.send_signal(signum)
    async with asyncio.timeout(timeout):
        code = await served.process.wait()
        if served.drain is not None:
            await served.drain
    return code
