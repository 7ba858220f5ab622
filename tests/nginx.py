"""A real nginx in front of a test's service, configured from the example in deploy/nginx/.

The example's two server blocks (the service at the root of a host, and under `/research/`)
each get a free loopback port, its upstream the test's service; everything nginx writes (pid,
logs, temp files) goes to the test's folder, and nginx runs in the foreground as our child.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

import pytest

from tests.loopback import PORT_ATTEMPTS, PORT_TAKEN, PortTaken, free_port

NGINX: Final = Path("/usr/sbin/nginx")
DEPLOY: Final = Path(__file__).resolve().parent.parent / "deploy" / "nginx"
SITE: Final = "research-service.conf"
SNIPPET: Final = "research-service-proxy.conf"
#: What the example says, and what the tests put in its place (each must be there as written).
EXAMPLE_LISTEN: Final = re.compile(r"^    listen 80;$", re.MULTILINE)  # not the comments'
EXAMPLE_UPSTREAM: Final = "server 127.0.0.1:8080;"
EXAMPLE_READ_TIMEOUT: Final = "proxy_read_timeout 1h;"
PREFIX: Final = "/research/"
#: The master logs this (at `notice`) once its sockets are bound and its workers started.
READY: Final = re.compile(rb"start worker process \d+")
TIMEOUT_S: Final = 20.0

T = TypeVar("T")


def require_nginx() -> Path:
    """Debian's nginx; a test without it fails under CI=true and is skipped otherwise."""
    if not NGINX.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{NGINX} is missing in CI; .ci/run should have installed nginx")
        pytest.skip(f"{NGINX} is not installed (apt-get install nginx)")
    return NGINX


def site_config(*, upstream_port: int, ports: tuple[int, int]) -> str:
    """The example site with the test's ports (root server, prefix server) and upstream."""
    site = (DEPLOY / SITE).read_text(encoding="utf-8")
    assert site.count(EXAMPLE_UPSTREAM) == 1, f"{SITE} no longer says {EXAMPLE_UPSTREAM!r}"
    assert len(EXAMPLE_LISTEN.findall(site)) == 2, f"{SITE} should have two servers on port 80"
    site = site.replace(EXAMPLE_UPSTREAM, f"server 127.0.0.1:{upstream_port};")
    for port in ports:
        site = EXAMPLE_LISTEN.sub(f"    listen 127.0.0.1:{port};", site, count=1)
    return site


def snippet_config(*, read_timeout: str | None) -> str:
    """The example's proxy snippet, with a shorter read timeout if a test asks for one."""
    snippet = (DEPLOY / SNIPPET).read_text(encoding="utf-8")
    assert snippet.count(EXAMPLE_READ_TIMEOUT) == 1, f"{SNIPPET} lost {EXAMPLE_READ_TIMEOUT!r}"
    if read_timeout is not None:
        snippet = snippet.replace(EXAMPLE_READ_TIMEOUT, f"proxy_read_timeout {read_timeout};")
    return snippet


def main_config(folder: Path, *, site: str = SITE) -> str:
    """nginx.conf around a site: foreground, one worker, every path in `folder`."""
    # Run as root, nginx would hand its workers to `nobody`, who cannot enter pytest's folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = folder / "temp"
    return f"""daemon off;
worker_processes 1;
{user}pid {folder / "nginx.pid"};
error_log stderr notice;
events {{ worker_connections 256; }}
http {{
    access_log {folder / "access.log"};
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};
    # As in Debian's own nginx.conf; the example must keep streams uncompressed regardless.
    gzip on;
    include {site};
}}
"""


@dataclass
class Child:
    """nginx in the foreground as our child, and what it has written to stderr so far."""

    process: asyncio.subprocess.Process
    log: bytearray = field(default_factory=bytearray)
    grew: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_log(
        self, pattern: re.Pattern[bytes], *, count: int = 1, timeout: float = TIMEOUT_S
    ) -> list[re.Match[bytes]]:
        """Wait until `pattern` matches the log `count` times; return the matches."""
        async with asyncio.timeout(timeout):
            while len(matches := list(pattern.finditer(self.log))) < count:
                assert self.process.returncode is None, f"nginx exited:\n{self.log.decode()}"
                self.grew.clear()
                await self.grew.wait()
        return matches


@dataclass
class Nginx:
    """A running nginx: the root server on `root_port`, the `/research/` one on `prefix_port`."""

    process: asyncio.subprocess.Process
    root_port: int
    prefix_port: int
    log: bytearray = field(default_factory=bytearray)

    def url(self, path: str = "", *, prefixed: bool = True) -> str:
        """The address of the service's `path` (no leading slash) through one of the servers."""
        if prefixed:
            return f"http://127.0.0.1:{self.prefix_port}{PREFIX}{path}"
        return f"http://127.0.0.1:{self.root_port}/{path}"


async def _drain(child: Child) -> None:
    assert child.process.stderr is not None
    while line := await child.process.stderr.readline():
        child.log += line
        child.grew.set()
    child.grew.set()


async def _start(folder: Path) -> Child:
    process = await asyncio.create_subprocess_exec(
        str(require_nginx()),
        "-p",
        str(folder),
        "-c",
        str(folder / "nginx.conf"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    child = Child(process)
    async with asyncio.timeout(TIMEOUT_S):
        while not READY.search(child.log):
            line = await process.stderr.readline()
            if not line:
                await process.wait()
                if PORT_TAKEN in child.log:
                    raise PortTaken(child.log.decode())
                raise AssertionError(f"nginx did not start:\n{child.log.decode()}")
            child.log += line
    return child


@contextlib.asynccontextmanager
async def child(folder: Path, configure: Callable[[], T]) -> AsyncIterator[tuple[Child, T]]:
    """nginx with `folder`/nginx.conf (and `folder` as its prefix) until the block ends.

    `configure()` writes the configuration, with ports it picks, and returns what the test
    needs of it. When one of those ports was taken before nginx bound it, nginx is started
    again on what `configure()` picks next (up to PORT_ATTEMPTS times in all).
    """
    for attempt in range(1, PORT_ATTEMPTS + 1):
        configured = configure()
        try:
            started = await _start(folder)
            break
        except PortTaken:
            if attempt == PORT_ATTEMPTS:
                raise
    drain = asyncio.create_task(_drain(started))
    try:
        yield started, configured
    finally:
        if started.process.returncode is None:
            # SIGTERM: a fast shutdown that does not wait for open streams to end.
            started.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT_S):
            await started.process.wait()
            await drain


@contextlib.asynccontextmanager
async def running(
    folder: Path, *, upstream_port: int, read_timeout: str | None = None
) -> AsyncIterator[Nginx]:
    """nginx from the example, proxying to 127.0.0.1:`upstream_port`, until the block ends."""
    require_nginx()
    (folder / "snippets").mkdir(parents=True)
    (folder / "temp").mkdir()
    (folder / "snippets" / SNIPPET).write_text(snippet_config(read_timeout=read_timeout))
    (folder / "nginx.conf").write_text(main_config(folder))

    def configure() -> tuple[int, int]:
        ports = (free_port(), free_port())
        (folder / SITE).write_text(site_config(upstream_port=upstream_port, ports=ports))
        return ports

    async with child(folder, configure) as (started, ports):
        yield Nginx(started.process, *ports, log=started.log)
