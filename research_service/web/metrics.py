"""`GET /metrics`: what this process counts, in Prometheus's text format (prometheus-client).

The counts live in plain numbers (research_service.stats), bumped where things happen; a
collector turns them into metric families only when Prometheus scrapes. Each app has its own
registry, so every process (every node of a cluster) is scraped on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
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

from research_service.errors import Forbidden
from research_service.stats import Buckets
from research_service.web.access import AUTH
from research_service.web.keys import MANAGER

#: How often the event loop's lag is sampled (s).
LAG_SAMPLE_S: Final = 1.0
#: Answers counted as refusals (too many runs, unavailable).
REFUSALS: Final = (429, 503)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("metrics_registry")


class ServiceCollector(Collector):
    """Reads the run manager's counts at scrape time."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        """The metric families, from the counts as they are now."""
        manager = self.app[MANAGER]
        stats = manager.stats
        prefix = "research"
        yield _counter(
            f"{prefix}_runs_created", "runs created through this process", stats.runs_created
        )
        finished = CounterMetricFamily(
            f"{prefix}_runs_finished",
            "runs that ended here, by status and error code",
            labels=["status", "code"],
        )
        for (status, code), count in sorted(stats.runs_finished.items()):
            finished.add_metric([status, code], count)
        yield finished
        yield _gauge(
            f"{prefix}_active_runs", "runs executing here or being created", manager.active_runs
        )
        yield _gauge(f"{prefix}_open_streams", "event streams open now", stats.open_streams)
        yield _counter(
            f"{prefix}_events_appended", "events runs appended here", stats.events_appended
        )
        yield _counter(
            f"{prefix}_events_delivered",
            "events written to listeners' sockets",
            stats.events_delivered,
        )
        yield _counter(f"{prefix}_resumes", "streams resumed with a Last-Event-ID", stats.resumes)
        yield _counter(
            f"{prefix}_listeners_cut",
            "listeners cut because their socket took no data for --write-timeout-s",
            stats.listeners_cut,
        )
        refused = CounterMetricFamily(
            f"{prefix}_refusals", "requests answered 429 or 503", labels=["status"]
        )
        for refusal in REFUSALS:
            refused.add_metric([str(refusal)], stats.refusals[refusal])
        yield refused
        phases = HistogramMetricFamily(
            f"{prefix}_phase_seconds", "how long completed phases took", labels=["phase"]
        )
        for phase, buckets in sorted(stats.phases.items()):
            phases.add_metric([phase], buckets.cumulative(), sum_value=buckets.total)
        yield phases
        yield _histogram(
            f"{prefix}_event_loop_lag_seconds",
            "how late a timer fires on the event loop (sampled every second)",
            stats.loop_lag,
        )


def _counter(name: str, documentation: str, value: int) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=value)


def _gauge(name: str, documentation: str, value: int) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _histogram(name: str, documentation: str, buckets: Buckets) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation)
    family.add_metric([], buckets.cumulative(), sum_value=buckets.total)
    return family


async def metrics(request: web.Request) -> web.Response:
    """`GET /metrics`: open with auth off; with auth on, for admin keys only."""
    auth = request.app.get(AUTH)
    if auth is not None:
        access = await auth.access(request)
        if not access.admin:
            raise Forbidden(
                "metrics are for admin keys; create one with `keys create NAME --admin`"
            )
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def count_refusals(request: web.Request, response: web.StreamResponse) -> None:
    """Count the 429 and 503 answers (on_response_prepare)."""
    if response.status in REFUSALS and MANAGER in request.app:
        request.app[MANAGER].stats.refusals[response.status] += 1


async def sample_loop_lag(app: web.Application) -> AsyncIterator[None]:
    """Measure, every LAG_SAMPLE_S, how late the event loop runs a timer (cleanup_ctx)."""
    loop = asyncio.get_running_loop()

    async def sample() -> None:
        while True:
            expected = loop.time() + LAG_SAMPLE_S
            await asyncio.sleep(LAG_SAMPLE_S)
            if MANAGER in app:
                app[MANAGER].stats.loop_lag.observe(max(0.0, loop.time() - expected))

    task = asyncio.create_task(sample(), name="loop-lag")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup_metrics(app: web.Application) -> None:
    """Serve `GET /metrics` and start counting what it reports."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(app))
    app[REGISTRY] = registry
    app.router.add_get("/metrics", metrics, allow_head=False, name="metrics")
    app.on_response_prepare.append(count_refusals)
    app.cleanup_ctx.append(sample_loop_lag)
