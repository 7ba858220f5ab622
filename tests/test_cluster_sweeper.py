"""A node's sweep for runs whose executor died, on a real Redis and PostgreSQL.

The node processes are left out: the test drives `Sweeper.sweep` directly, so that the run
store can fail exactly while a lost run is being ended.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from unittest.mock import ANY

import pytest
import redis.asyncio as aioredis

from research_service.cluster.cluster_log import ClusterLog
from research_service.cluster.coordinator import ClusterCoordinator
from research_service.cluster.redis_link import Keys
from research_service.cluster.sweeper import Sweeper
from research_service.errors import StoreUnavailable
from research_service.events import Event
from research_service.runs import postgres_log
from research_service.runs.models import RunRecord
from tests import postgres
from tests.cluster import own_prefix

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

RUN = "0123456789abcdef"
NODE = "sweeping-node"


@pytest.fixture
async def redis() -> AsyncIterator[tuple[aioredis.Redis, Keys]]:
    async with own_prefix("sweeper") as pair:
        yield pair


async def test_a_lost_run_whose_ending_failed_part_way_is_ended_at_the_next_sweep(
    redis: tuple[aioredis.Redis, Keys], postgres_url: str
) -> None:
    """The sweep takes a dead executor's run over, then the run store fails before the run is
    ended. Taken over, the run's executor is this node, which is alive: without a retry no
    sweep would ever end it, and its listeners would wait for a `done` for good."""
    client, keys = redis
    writer = await postgres_log.open(postgres_url)  # the executor that died
    log = ClusterLog(await postgres_log.open(postgres_url, shared=True), client, keys)
    coordinator = ClusterCoordinator(redis=client, keys=keys, log=log, node_id=NODE, lease_s=1)
    sweeper = Sweeper(coordinator)
    try:
        await writer.create_run(RunRecord(RUN, "Lost?"))
        started = {"phase": "planning", "status": "started", "elapsed_ms": 0}
        await writer.append(Event.create(RUN, 1, "phase", started, t_ms=0))
        await writer.flush()
        now = time.time()
        postgres.query(
            postgres_url,
            "INSERT INTO executions (run_id, executor, queued_at, claimed_at) "
            "VALUES ($1, 'dead-executor', $2, $2)",
            RUN,
            now,
        )
        await client.set(keys.node(NODE), "alive", ex=60)  # this node's heartbeat

        postgres.query(postgres_url, "ALTER TABLE runs RENAME TO runs_away")
        try:
            with pytest.raises(StoreUnavailable):
                await sweeper.sweep()  # took the run over, then could not read it
        finally:
            postgres.query(postgres_url, "ALTER TABLE runs_away RENAME TO runs")
        (taken,) = postgres.query(postgres_url, "SELECT executor, ended_at FROM executions")
        assert (taken["executor"], taken["ended_at"]) == (NODE, None)

        await sweeper.sweep()
        events = await log.store.stored_events(RUN, after=0)
        assert events is not None
        assert [event[2] for event in events] == ["phase", "error", "done"]
        assert json.loads(events[1][4].split(b"data: ", 1)[1])["code"] == "worker_lost"
        (ended,) = postgres.query(postgres_url, "SELECT ended_at FROM executions")
        assert ended["ended_at"] is not None
    finally:
        await log.close()
        await writer.close()


@pytest.mark.parametrize("started", [False, True], ids=["claimed", "taken-over"])
async def test_a_run_recorded_as_this_node_s_that_runs_nowhere_is_ended(
    redis: tuple[aioredis.Redis, Keys], postgres_url: str, started: bool
) -> None:
    """A claim (or a take-over) was made in PostgreSQL but its answer was lost, the database
    gone a moment: the run is recorded as this live node's, and no step here knows it is.
    (A chaos campaign left such runs `queued` or `running` for good.) The sweep ends it once
    two sweeps in a row find it so; a run this node is executing or claiming is left alone."""
    client, keys = redis
    writer = await postgres_log.open(postgres_url)
    log = ClusterLog(await postgres_log.open(postgres_url, shared=True), client, keys)
    coordinator = ClusterCoordinator(redis=client, keys=keys, log=log, node_id=NODE, lease_s=1)
    sweeper = Sweeper(coordinator)
    claiming, executing = "1" * 16, "2" * 16
    try:
        now = time.time()
        for run_id in (RUN, claiming, executing):
            await writer.create_run(RunRecord(run_id, "Whose?"))
            if started:
                begun = {"phase": "planning", "status": "started", "elapsed_ms": 0}
                await writer.append(Event.create(run_id, 1, "phase", begun, t_ms=0))
            postgres.query(
                postgres_url,
                "INSERT INTO executions (run_id, executor, queued_at, claimed_at) "
                "VALUES ($1, $2, $3, $3)",
                run_id,
                NODE,
                now,
            )
        await writer.flush()
        await client.set(keys.node(NODE), "alive", ex=60)
        coordinator.claiming.add(claiming)
        coordinator.local.add(executing)

        await sweeper.sweep()  # once: it may be a claim whose answer is on its way
        assert await log.store.stored_events(RUN, after=0) == ([] if not started else [ANY])
        await sweeper.sweep()
        events = await log.store.stored_events(RUN, after=0)
        assert events is not None
        assert [event[2] for event in events][-2:] == ["error", "done"]
        error = json.loads(events[-2][4].split(b"data: ", 1)[1])
        assert error["code"] == "worker_lost"
        assert "left without an executor" in error["message"]
        ended = postgres.query(postgres_url, "SELECT run_id, ended_at FROM executions")
        assert {row["run_id"] for row in ended if row["ended_at"] is not None} == {RUN}
    finally:
        await log.close()
        await writer.close()
