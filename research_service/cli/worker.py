"""`research-service worker`: a cluster node that executes runs and serves no API."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any, Final

from aiohttp import web

from research_service.addresses import cannot_listen, url_host
from research_service.cli.catalogue import help_line
from research_service.cli.flags import make_data_dir, settings_flags, settings_from
from research_service.collector import freeze_startup_objects, start_quiet_collections
from research_service.errors import ConfigError
from research_service.events import dumps
from research_service.logs import configure_logging
from research_service.own_thread import set_background_nice
from research_service.settings import Settings
from research_service.settings_fields import MAX_PORT

log = logging.getLogger(__name__)

HEALTH_PORT_VARIABLE: Final = "RESEARCH_HEALTH_PORT"


def add_parser(commands: Any) -> None:
    """The `worker` sub-command: the store, provider and pipeline flags of `serve`."""
    worker = commands.add_parser(
        "worker",
        help=help_line("worker"),
        description="Execute the runs a cluster's API nodes queue: takes them from Redis, "
        "writes their events to PostgreSQL and Redis. Needs --redis-url, --store postgres and "
        "--database-url. SIGTERM drains: no new runs, the running ones get --drain-s to finish. "
        "Every flag can also be set by its RESEARCH_* environment variable.",
    )
    settings_flags(worker)
    worker.add_argument(
        "--health-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve GET /healthz on --host at this port: 200 while taking runs, 503 while "
        "starting or draining; and GET /metrics (with RESEARCH_METRICS_TOKEN set, only for "
        f"it); 0 picks a free port, which the log names (env {HEALTH_PORT_VARIABLE}; default: "
        "none)",
    )
    worker.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute runs until SIGTERM or SIGINT, then drain."""
    settings = settings_from(args)
    if settings.redis_url is None:
        raise ConfigError(
            "a worker executes the runs of a cluster: give --redis-url (RESEARCH_REDIS_URL), "
            "--store postgres and --database-url"
        )
    if not settings.execute:
        raise ConfigError("a worker executes runs: drop --no-execute (RESEARCH_EXECUTE)")
    port = args.health_port
    if port is None and os.environ.get(HEALTH_PORT_VARIABLE):
        try:
            port = int(os.environ[HEALTH_PORT_VARIABLE])
        except ValueError:
            raise ConfigError(f"{HEALTH_PORT_VARIABLE} must be a port number") from None
    if port is not None and not 0 <= port <= MAX_PORT:
        raise ConfigError(
            f"health port must be 0-{MAX_PORT}, got {port}; fix --health-port or "
            f"{HEALTH_PORT_VARIABLE}"
        )
    configure_logging(settings.log_level, settings.log_format)
    make_data_dir(settings.data_dir)
    asyncio.run(work(settings, health_port=port))
    return 0


async def work(settings: Settings, *, health_port: int | None) -> None:
    """Take runs until a signal; then take no more, let the running ones drain, and stop."""
    from research_service.app import create_app  # noqa: PLC0415 - as `serve` does
    from research_service.web.keys import CLUSTER, MANAGER  # noqa: PLC0415
    from research_service.web.metrics import forget_startup_stalls  # noqa: PLC0415

    # As `serve` does: the loop that publishes every run's events comes before the searches.
    set_background_nice(settings.background_nice)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = create_app(settings, api=False)
    # The health port before anything starts: a port in use stops the worker before it takes
    # a run, and /healthz answers 503 "starting" until the node takes runs.
    health = None if health_port is None else await _serve_health(settings.host, health_port, app)
    try:
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()  # starts the app: store, providers, and the node takes runs
        # As `serve` does: start-up's heap out of the collector's reach, full collections
        # while no run executes here.
        freeze_startup_objects()
        forget_startup_stalls(app)
        manager = app[MANAGER]
        collecting = start_quiet_collections(lambda: manager.active_runs == 0)
        try:
            node = app[CLUSTER]
            log.info("worker %s: taking runs", node.coordinator.node_id)
            await stop.wait()
            node.stop_taking()
            log.info(
                "worker stopping: no new runs; %d running get up to %g s to finish",
                manager.active_runs,
                settings.drain_s,
            )
        finally:
            collecting.cancel()
            await runner.cleanup()  # drains (the node's shutdown), then closes the store
    finally:
        if health is not None:
            await health.cleanup()


async def _serve_health(host: str, port: int, app: web.Application) -> web.AppRunner:
    """GET /healthz (200 while the worker takes runs, 503 while it starts or drains), /metrics.

    ConfigError when it cannot listen on HOST:PORT.
    """
    from research_service.web.keys import CLUSTER, MANAGER, SETTINGS  # noqa: PLC0415
    from research_service.web.metrics import worker_metrics  # noqa: PLC0415
    from research_service.web.problems import problem_middleware  # noqa: PLC0415
    from research_service.web.protocol import common_headers  # noqa: PLC0415

    async def healthz(_: web.Request) -> web.Response:
        node = app.get(CLUSTER)
        if node is None or MANAGER not in app:
            return web.json_response({"status": "starting"}, status=503, dumps=dumps)
        body = {
            "status": "draining" if node.draining else "ok",
            "node": node.coordinator.node_id,
            "active_runs": app[MANAGER].active_runs,
        }
        # Compact, as the service's own /healthz.
        return web.json_response(body, status=503 if node.draining else 200, dumps=dumps)

    # Its answers as the service's own: problem+json errors (an unknown path, a wrong token),
    # the service's Server header, and idle connections closed at --header-timeout-s.
    health = web.Application(middlewares=[problem_middleware])
    health.on_response_prepare.append(common_headers)
    health.router.add_get("/healthz", healthz)
    health.router.add_get("/metrics", worker_metrics(app), allow_head=False)
    timeout = app[SETTINGS].header_timeout_s
    runner = web.AppRunner(health, handle_signals=False, access_log=None, keepalive_timeout=timeout)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise cannot_listen(exc, host, port, flag="--health-port") from None
    # The port bound, which --health-port 0 leaves to the kernel.
    bound_host, bound_port = runner.addresses[0][:2]
    log.info("worker health: http://%s:%d/healthz", url_host(bound_host), bound_port)
    return runner
