"""`GET /metrics`: what this process counts, in Prometheus's text format (prometheus-client).

The counts live in plain numbers (research_service.stats), bumped where things happen; a
collector turns them into metric families only when Prometheus scrapes. Each app has its own
registry, so every process (every node of a cluster) is scraped on its own. What only Redis
knows (the cluster's queue) is read by the handler just before the collector runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from research_service.collector import frozen_objects, full_collections, quiet_collections
from research_service.errors import Forbidden, Unauthorized
from research_service.log_writer import lost_lines
from research_service.stats import Buckets, Stats
from research_service.web import validation
from research_service.web.access import AUTH
from research_service.web.expect import expect_handler
from research_service.web.keys import CLUSTER, MANAGER, SETTINGS
from research_service.web.origin import HEALTH_PATHS

log = logging.getLogger(__name__)

#: How often the event loop's lag is sampled (s): a stall of S seconds shows as a lag between
#: S - 10 ms and S, and 100 wake-ups a second cost about 0.2 % of a core.
LAG_SAMPLE_S: Final = 0.01
#: How long a scrape waits for Redis to tell the queue's depth before it goes on without it.
QUEUE_SAMPLE_TIMEOUT_S: Final = 1.0
#: Answers counted as refusals (too many runs, unavailable).
REFUSALS: Final = (429, 503)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry")
Handler = Callable[[web.Request], Awaitable[web.Response]]
#: Every metric's name starts so.
PREFIX: Final = "research"


class ServiceCollector(Collector):
    """Reads the run manager's counts at scrape time."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        """The metric families, from the counts as they are now."""
        manager = self.app[MANAGER]
        stats = manager.stats
        yield _counter(
            f"{PREFIX}_runs_created", "runs created through this process", stats.runs_created
        )
        finished = CounterMetricFamily(
            f"{PREFIX}_runs_finished",
            "runs that ended here, by status and error code",
            labels=["status", "code"],
        )
        for (status, code), count in sorted(stats.runs_finished.items()):
            finished.add_metric([status, code], count)
        yield finished
        yield _gauge(
            f"{PREFIX}_active_runs", "runs executing here or being created", manager.active_runs
        )
        yield _queued(stats)
        refused = CounterMetricFamily(
            f"{PREFIX}_refusals", "requests answered 429 or 503", labels=["status"]
        )
        for refusal in REFUSALS:
            refused.add_metric([str(refusal)], stats.refusals[refusal])
        yield refused
        phases = HistogramMetricFamily(
            f"{PREFIX}_phase_seconds", "how long completed phases took", labels=["phase"]
        )
        for phase, buckets in sorted(stats.phases.items()):
            phases.add_metric([phase], buckets.cumulative(), sum_value=buckets.total)
        yield phases
        yield from _streams(stats)
        yield from _providers(stats)
        yield from _webhooks(stats)
        yield _histogram(
            f"{PREFIX}_event_loop_lag_seconds",
            "how late a timer fires on the event loop (sampled every 10 ms)",
            stats.loop_lag,
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_event_loop_lag_max_seconds",
            "the longest the event loop was late since the service began serving",
            value=stats.loop_lag_max,
        )
        yield from _collector()
        yield _counter(
            f"{PREFIX}_log_lines_lost",
            "log lines dropped (the log's reader fell behind) or not written (its stream failed)",
            lost_lines(),
        )


def _collector() -> Iterator[Metric]:
    """The garbage collector: start-up's frozen heap, full collections and the quiet ones."""
    yield _gauge(
        f"{PREFIX}_gc_frozen_objects",
        "objects start-up left out of the garbage collector's reach",
        frozen_objects(),
    )
    yield _counter(
        f"{PREFIX}_gc_full_collections",
        "full (generation 2) garbage collections, wherever they fell",
        full_collections(),
    )
    yield _counter(
        f"{PREFIX}_gc_quiet_collections",
        "full garbage collections taken while no run executed and no stream was open",
        quiet_collections(),
    )


def _streams(stats: Stats) -> Iterator[Metric]:
    """The event streams: open, events written, resumes, listeners cut or gone, lag."""
    yield _gauge(f"{PREFIX}_open_streams", "event streams open now", stats.open_streams)
    yield _counter(f"{PREFIX}_events_appended", "events runs appended here", stats.events_appended)
    yield _counter(
        f"{PREFIX}_events_delivered", "events written to listeners' sockets", stats.events_delivered
    )
    yield _counter(f"{PREFIX}_resumes", "streams resumed with a Last-Event-ID", stats.resumes)
    yield _counter(
        f"{PREFIX}_listeners_cut",
        "listeners cut because their socket took no data for --write-timeout-s",
        stats.listeners_cut,
    )
    yield _counter(
        f"{PREFIX}_listeners_dropped",
        "streams whose client went away before the run's done",
        stats.listeners_dropped,
    )
    yield _histogram(
        f"{PREFIX}_event_delivery_lag_seconds",
        "from a live event reaching the run's hub to its write to a listener's socket",
        stats.delivery_lag,
    )


def _webhooks(stats: Stats) -> Iterator[Metric]:
    """Completion webhooks: attempts by outcome, deliveries by how they ended."""
    attempts = CounterMetricFamily(
        f"{PREFIX}_webhook_attempts", "webhook POSTs made, by outcome", labels=["outcome"]
    )
    for outcome in ("ok", "failed"):
        attempts.add_metric([outcome], stats.webhook_attempts[outcome])
    yield attempts
    ended = CounterMetricFamily(
        f"{PREFIX}_webhooks", "webhook deliveries that ended, by state", labels=["state"]
    )
    for state in ("delivered", "failed"):
        ended.add_metric([state], stats.webhooks_ended[state])
    yield ended


def _providers(stats: Stats) -> Iterator[Metric]:
    """The model's and the search provider's calls, by provider and stage."""
    labels = ["provider", "stage"]
    calls = CounterMetricFamily(f"{PREFIX}_provider_calls", "provider calls", labels=labels)
    retries = CounterMetricFamily(
        f"{PREFIX}_provider_retries", "provider call attempts sent again", labels=labels
    )
    errors = CounterMetricFamily(
        f"{PREFIX}_provider_errors", "provider calls that failed (after retries)", labels=labels
    )
    seconds = HistogramMetricFamily(
        f"{PREFIX}_provider_call_seconds", "whole provider calls that ended", labels=labels
    )
    first = HistogramMetricFamily(
        f"{PREFIX}_provider_first_token_seconds",
        "streamed answers: from the request to the first piece",
        labels=labels,
    )
    for (provider, stage), counts in sorted(stats.provider_calls.items()):
        key = [provider, stage]
        calls.add_metric(key, counts.calls)
        retries.add_metric(key, counts.retries)
        errors.add_metric(key, counts.errors)
        seconds.add_metric(key, counts.seconds.cumulative(), sum_value=counts.seconds.total)
        if counts.first_token is not None:
            buckets = counts.first_token
            first.add_metric(key, buckets.cumulative(), sum_value=buckets.total)
    yield from (calls, retries, errors, seconds, first)


def _queued(stats: Stats) -> GaugeMetricFamily:
    """The cluster's queue as sampled for this scrape; described, with no sample, elsewhere."""
    family = GaugeMetricFamily(
        f"{PREFIX}_queued_runs",
        "runs waiting in the cluster's queue: unread by any executor, or read but unacknowledged",
        labels=["state"],
    )
    for state, count in sorted((stats.queued or {}).items()):
        family.add_metric([state], count)
    return family


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _histogram(name: str, documentation: str, buckets: Buckets) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], buckets.cumulative(), sum_value=buckets.total)
    return family


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`: open with auth off; with auth on, for admin keys and the metrics token."""
    validation.known_params(request.query)
    auth = request.app.get(AUTH)
    if auth is not None and not _has_metrics_token(request):
        access = await auth.access(request)
        if not access.admin:
            raise Forbidden(
                "metrics are for admin keys and the metrics token (RESEARCH_METRICS_TOKEN); "
                "create an admin key with `keys create NAME --admin`"
            )
    return await scrape(request.app)


async def scrape(app: web.Application) -> web.Response:
    """The metrics of `app`, as Prometheus reads them."""
    await _sample_queue(app)
    body = generate_latest(app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def worker_metrics(app: web.Application) -> Handler:
    """A worker's `GET /metrics` (on its --health-port): the metrics token when one is set."""

    async def handle(request: web.Request) -> web.Response:
        validation.known_params(request.query)
        if app[SETTINGS].metrics_token and not _has_metrics_token(request, app):
            raise Unauthorized(
                "give Authorization: Bearer <RESEARCH_METRICS_TOKEN>", error="invalid_token"
            )
        return await scrape(app)

    return handle


def _has_metrics_token(request: web.Request, app: web.Application | None = None) -> bool:
    """Whether the request carries `Authorization: Bearer <--metrics-token>`."""
    token = (app or request.app)[SETTINGS].metrics_token
    if not token:
        return False
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    # In constant time: how much of a guess matched must not show in the answer's timing.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


async def _sample_queue(app: web.Application) -> None:
    """Read the cluster's queue depth for this scrape (the collector cannot wait for Redis)."""
    node = app.get(CLUSTER)
    if node is None or MANAGER not in app:
        return
    # A cluster node's: cluster mode's modules are loaded already, and only there.
    from research_service.cluster.queue_depth import queue_depth  # noqa: PLC0415
    from research_service.cluster.redis_link import ERRORS as REDIS_ERRORS  # noqa: PLC0415

    stats = app[MANAGER].stats
    try:
        async with asyncio.timeout(QUEUE_SAMPLE_TIMEOUT_S):
            stats.queued = await queue_depth(node.redis, node.coordinator.keys)
    except REDIS_ERRORS as exc:
        log.debug("the queue's depth is unknown for this scrape: %s", exc)
        stats.queued = None


async def count_refusals(request: web.Request, response: web.StreamResponse) -> None:
    """Count the 429 and 503 answers (on_response_prepare); a probe's 503 is no refusal.

    `/readyz` answers 503 while a part is down, and `/healthz` while a worker drains: what a
    load balancer's probes ask every few seconds would otherwise count as refused requests.
    """
    if request.path in HEALTH_PATHS:
        return
    if response.status in REFUSALS and MANAGER in request.app:
        request.app[MANAGER].stats.refusals[response.status] += 1


async def sample_loop_lag(app: web.Application) -> AsyncIterator[None]:
    """Measure, every LAG_SAMPLE_S, how late the event loop runs a timer (cleanup_ctx)."""
    loop = asyncio.get_running_loop()

    async def sample() -> None:
        while True:
            epoch = app[MANAGER].stats.loop_lag_epoch if MANAGER in app else -1
            expected = loop.time() + LAG_SAMPLE_S
            await asyncio.sleep(LAG_SAMPLE_S)
            if MANAGER in app:
                stats = app[MANAGER].stats
                late = max(0.0, loop.time() - expected)
                stats.loop_lag.observe(late)
                if stats.loop_lag_epoch == epoch:
                    stats.loop_lag_max = max(stats.loop_lag_max, late)

    task = asyncio.create_task(sample(), name="loop-lag")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def forget_startup_stalls(app: web.Application) -> None:
    """Start the worst-stall gauge afresh: the service begins serving now.

    Start-up's one-off work (the store's and the index's checks, freezing the start-up heap)
    holds the loop for tens of ms once; kept, it would hide every stall while serving. The
    lag histogram keeps every sample; a sample under way now is start-up's, not the gauge's.
    """
    if MANAGER in app:
        stats = app[MANAGER].stats
        stats.loop_lag_max = 0.0
        stats.loop_lag_epoch += 1


def setup_metrics(app: web.Application) -> None:
    """Serve `GET /metrics` and start counting what it reports."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(app))
    app[REGISTRY] = registry
    app.router.add_get(
        "/metrics", metrics, allow_head=False, name="metrics", expect_handler=expect_handler
    )
    app.on_response_prepare.append(count_refusals)
    app.cleanup_ctx.append(sample_loop_lag)
