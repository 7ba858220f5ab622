"""One process of a cluster: its Redis link, event log, coordinator and (maybe) executor."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from research_service.cluster.checks import check_cluster_settings
from research_service.cluster.cluster_log import ClusterLog
from research_service.cluster.coordinator import ClusterCoordinator
from research_service.cluster.executor import Executor
from research_service.cluster.redis_link import Keys, connect, node_id
from research_service.cluster.sweeper import Sweeper
from research_service.runs import postgres_log
from research_service.runs.manager import RunManager
from research_service.settings import Settings

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ClusterNode:
    """The part of this process in the cluster, started once its run manager exists."""

    settings: Settings
    redis: aioredis.Redis
    log: ClusterLog
    coordinator: ClusterCoordinator
    executor: Executor | None = field(default=None)
    sweeper: Sweeper | None = field(default=None)

    async def start(self, manager: RunManager, *, api: bool = True) -> None:
        """Heartbeat, listener counts, and (unless --no-execute) take runs from the queue.

        `api`: whether this node serves the API (a worker does not); said in the log line.
        """
        self.coordinator.start()
        self.sweeper = Sweeper(self.coordinator)
        self.sweeper.start()
        if self.settings.execute:
            self.executor = Executor(manager, self.coordinator, self.settings.max_active_runs)
            await self.executor.start()
        roles = (("executes runs", self.settings.execute), ("serves the API", api))
        role = " and ".join(name for name, on in roles if on)
        log.info(
            "cluster node %s %s (lease %g s)", self.coordinator.node_id, role, self.settings.lease_s
        )

    @property
    def draining(self) -> bool:
        """Whether this node has stopped taking runs."""
        return self.executor is not None and self.executor.draining

    def stop_taking(self) -> None:
        """Take no more runs (a stopping worker, at once, before it drains)."""
        if self.executor is not None:
            self.executor.stop_taking()

    async def stop(self, manager: RunManager) -> None:
        """Stopping: streams here end (clients resume on another node), runs here drain."""
        manager.close_streams()
        await self.log.followers.close()
        if self.executor is not None:
            await self.executor.drain(self.settings.drain_s)
            await self.executor.close()
        else:
            await manager.shutdown()

    async def close(self) -> None:
        """Leave the cluster: no heartbeat, nothing queued to publish, the store closed."""
        if self.sweeper is not None:
            await self.sweeper.close()
        if self.executor is not None:
            await self.executor.close()
        await self.coordinator.close()
        await self.log.close()


async def open_node(settings: Settings, stack: AsyncExitStack) -> ClusterNode:
    """Connect to the cluster's Redis and PostgreSQL; closed when `stack` unwinds."""
    check_cluster_settings(settings)
    assert settings.redis_url is not None
    assert settings.database_url is not None
    redis = await connect(settings.redis_url)
    stack.push_async_callback(redis.aclose)
    store = await postgres_log.open(settings.database_url, shared=True)
    keys = Keys(settings.redis_prefix)
    cluster_log = ClusterLog(store, redis, keys)
    coordinator = ClusterCoordinator(
        redis=redis,
        keys=keys,
        log=cluster_log,
        node_id=node_id(),
        lease_s=settings.lease_s,
        counts_owners=settings.max_active_runs_per_owner is not None,
    )
    node = ClusterNode(settings, redis, cluster_log, coordinator)
    stack.push_async_callback(node.close)
    return node
