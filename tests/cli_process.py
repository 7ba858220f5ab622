"""Run `python -m research_service` as a child process, reading its output as it comes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Generous: a child imports the whole service before it prints anything.
TIMEOUT_S = 60.0


@dataclass
class Finished:
    """A finished command: its exit status and everything it wrote."""

    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.splitlines()]


@dataclass
class Cli:
    """A running command; `line()` reads stdout line by line, `finish()` waits for the exit."""

    proc: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)

    async def line(self, timeout: float = TIMEOUT_S) -> str:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            raw = await self.proc.stdout.readline()
        assert raw, "the command closed stdout before the expected line"
        text = raw.decode()
        self.lines.append(text)
        return text

    async def json_until(self, predicate: Any, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        """Read `--json` lines until one satisfies `predicate`; return it."""
        async with asyncio.timeout(timeout):
            while True:
                event: dict[str, Any] = json.loads(await self.line())
                if predicate(event):
                    return event

    async def finish(self, timeout: float = TIMEOUT_S) -> Finished:
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await self.proc.communicate()
        except TimeoutError:
            # A command that should have ended and did not (a regression) must not outlive
            # the test, holding its port and its files.
            self.proc.kill()
            await self.proc.wait()
            raise
        assert self.proc.returncode is not None
        return Finished(
            self.proc.returncode, "".join(self.lines) + stdout.decode(), stderr.decode()
        )


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without settings that would change the command's behaviour."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESEARCH_", "OPENAI_"))}
    env.update(extra)
    return env


async def start(
    *args: str,
    before: tuple[str, ...] = (),
    preexec_fn: Callable[[], None] | None = None,
    **env: str,
) -> Cli:
    """The console script with `args`, behind the command `before` (e.g. setpriv) if any."""
    proc = await asyncio.create_subprocess_exec(
        *before,
        sys.executable,
        "-m",
        "research_service",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(**env),
        preexec_fn=preexec_fn,
    )
    return Cli(proc)


async def run(*args: str, timeout: float = TIMEOUT_S, **env: str) -> Finished:
    return await (await start(*args, **env)).finish(timeout)
