"""Serving the app: bind first, start, stop on SIGTERM/SIGINT within the shutdown grace."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Final

from aiohttp import web

from research_service.addresses import cannot_listen, url_host
from research_service.collector import freeze_startup_objects, start_quiet_collections
from research_service.own_thread import set_background_nice
from research_service.settings import Settings
from research_service.web import access_log
from research_service.web.connections import (
    ConnectionGuard,
    check_connection_cap,
    default_max_connections,
    presize_file_table,
    raise_open_files_limit,
)
from research_service.web.keys import MANAGER
from research_service.web.metrics import forget_startup_stalls
from research_service.web.protocol import GuardedServer

log = logging.getLogger(__name__)

#: Pending connections the kernel queues while the service is busy accepting.
BACKLOG: Final = 512
#: After the grace, how long aborted connections get to be released before cleanup goes on.
ABORT_SETTLE_S: Final = 1.0
#: A connection whose client takes none of an answer for this many --write-timeout-s is reset
#: (any answer: a listener is cut sooner, after one, by its own stream).
STALL_TIMEOUTS: Final = 2


def server_options(settings: Settings) -> dict[str, Any]:
    """The options of aiohttp's connections, from the settings.

    `keepalive_timeout` also bounds how long a connection may take to send a request's
    headers: aiohttp closes a connection still waiting for a complete request when it fires.
    `handler_cancellation` releases a listener's handler as soon as its client goes away.
    Bodies are not decoded from their Content-Encoding by aiohttp, which inflates all of one,
    read or not, in one loop turn: the service decodes a body it reads, up to its limit
    (`web.body_encoding`).
    """
    return {
        "handler_cancellation": True,
        "auto_decompress": False,
        "access_log_class": access_log.QuietAccessLogger,
        "keepalive_timeout": settings.header_timeout_s,
        # A request body the handler did not read is drained for at most this long.
        "lingering_time": min(settings.body_timeout_s, 10.0),
    }


class ServiceRunner(web.AppRunner):
    """aiohttp's AppRunner with guarded connections and a shutdown bounded by the grace."""

    def __init__(
        self,
        app: web.Application,
        *,
        guard: ConnectionGuard,
        grace_s: float,
        stall_timeout_s: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, shutdown_timeout=ABORT_SETTLE_S, **kwargs)
        self.guard = guard
        self.grace_s = grace_s
        self.stall_timeout_s = stall_timeout_s

    async def _make_server(self) -> web.Server:
        # AppRunner starts the app and builds aiohttp's Server; ours makes the same
        # connections, each admitted by the guard.
        server = await super()._make_server()
        return GuardedServer(
            server.request_handler,
            guard=self.guard,
            stall_timeout_s=self.stall_timeout_s,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **server._kwargs,
        )

    async def shutdown(self) -> None:
        """Runs end with `done` and listeners take it, within the grace; then all is closed."""
        try:
            async with asyncio.timeout(self.grace_s):
                await self.app.shutdown()
                # Idle keep-alive connections go now; the others once their response ends.
                self.guard.close_idle()
                await self.guard.drained()
        except TimeoutError:
            pass
        closed = self.guard.close_all()
        if closed:
            log.info(
                "closed %d connections still open after the %g s shutdown grace",
                closed,
                self.grace_s,
            )


class BoundSite(web.BaseSite):
    """A site on an asyncio server that was bound before the app started."""

    def __init__(self, runner: web.BaseRunner, server: asyncio.Server, name: str) -> None:
        super().__init__(runner)
        self._bound = server
        self._name = name

    @property
    def name(self) -> str:
        """The URL the site serves."""
        return self._name

    async def start(self) -> None:
        """Start accepting connections."""
        await super().start()
        self._server = self._bound
        await self._bound.start_serving()


async def bind(settings: Settings, runner: web.BaseRunner) -> asyncio.Server:
    """Listen on the settings' host and port (not yet accepting); ConfigError when taken."""

    def protocol() -> asyncio.Protocol:
        server = runner.server
        assert server is not None, "connections are accepted only after the app started"
        return server()

    try:
        return await asyncio.get_running_loop().create_server(
            protocol, settings.host, settings.port, backlog=BACKLOG, start_serving=False
        )
    except OSError as exc:
        raise cannot_listen(exc, settings.host, settings.port, flag="--port") from None


def make_runner(app: web.Application, settings: Settings, **kwargs: Any) -> ServiceRunner:
    """The runner that serves `app` as `serve` does (tests use it with their own sites)."""
    guard = ConnectionGuard(settings.max_connections or default_max_connections())
    return ServiceRunner(
        app,
        guard=guard,
        grace_s=shutdown_grace(settings),
        stall_timeout_s=STALL_TIMEOUTS * settings.write_timeout_s,
        **(server_options(settings) | kwargs),
    )


def shutdown_grace(settings: Settings) -> float:
    """How long stopping may take: a cluster node that executes runs lets them drain first."""
    if settings.redis_url is not None and settings.execute:
        return settings.drain_s + settings.shutdown_grace_s
    return settings.shutdown_grace_s


async def serve(app: web.Application, settings: Settings) -> None:
    """Serve `app` until SIGTERM or SIGINT, then stop within the shutdown grace."""
    # Before any background thread starts: the loop that writes every stream comes first.
    set_background_nice(settings.background_nice)
    files = raise_open_files_limit()
    check_connection_cap(settings.max_connections, files)
    presize_file_table(files)  # grown once now, not in the accept() of a burst
    runner = make_runner(app, settings)
    guard = runner.guard
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(guard.loop_exception_handler)
    # From here on a signal stops the service (once it has started, if it is starting).
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await bind(settings, runner)
    collecting: asyncio.Task[None] | None = None
    try:
        await runner.setup()
        freeze_startup_objects()
        forget_startup_stalls(app)
        manager = app[MANAGER]
        collecting = start_quiet_collections(
            lambda: manager.active_runs == 0 and manager.stats.open_streams == 0
        )
        host, port = server.sockets[0].getsockname()[:2]
        site = BoundSite(runner, server, f"http://{url_host(host)}:{port}")
        await site.start()
        log.info(
            "Running on %s (up to %d connections; open-files limit %d)",
            site.name,
            guard.max_connections,
            files,
        )
        await stop.wait()
        log.info("stopping: live runs end now; %g s grace for their listeners", runner.grace_s)
    finally:
        if collecting is not None:
            collecting.cancel()
        server.close()
        await runner.cleanup()
