"""The cluster's run slots when an API node dies in the middle of a `POST /v1/runs`, and when
a run ends.

Real processes on a real Redis and PostgreSQL; the API node that dies reaches PostgreSQL
through a proxy (tests/drop_proxy.py) that holds its statement, or the statement's answer,
so that the SIGKILL lands between the run's slot and its place in the queue. A run's end is
held by a lock another connection takes on `executions`.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis

from research_service.cluster.slots import SLOT_LEASES
from tests import postgres
from tests.cluster import Cluster, Node, cluster_on, follow
from tests.drop_proxy import DropProxy
from tests.sse import listen

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

pytestmark = pytest.mark.timeout(180)

QUESTION = {"question": "How does photosynthesis work?"}
LEASE_S = 2.0  # tests/cluster.py's


@pytest.fixture
async def proxy() -> AsyncIterator[DropProxy]:
    proxy = DropProxy("127.0.0.1", 5432)
    await proxy.start()
    try:
        yield proxy
    finally:
        proxy.speak()
        await proxy.close()


async def slot_left_ms(redis: aioredis.Redis, cluster: Cluster, run_id: str) -> float:
    """How long the run's slot has before it lapses, by Redis's clock (negative: lapsed)."""
    score = await redis.zscore(f"{cluster.prefix}active", run_id)
    assert score is not None, f"run {run_id} holds no slot"
    seconds, micros = await redis.time()
    return float(score) - (seconds * 1000 + micros / 1000)


async def killed_while_posting(
    client: httpx.AsyncClient,
    redis: aioredis.Redis,
    cluster: Cluster,
    doomed: Node,
    *,
    stored_in: str | None = None,
) -> str:
    """POST to `doomed` (its statement held by the proxy), SIGKILL it once it holds a slot
    (and, with `stored_in`, once that database holds the run)."""
    posting = asyncio.create_task(client.post(f"{doomed.base}/v1/runs", json=QUESTION))
    active = f"{cluster.prefix}active"
    async with asyncio.timeout(10):
        while not (taken := await redis.zrange(active, 0, -1)):  # noqa: ASYNC110 - no event
            await asyncio.sleep(0.02)
        while stored_in and not postgres.query(stored_in, "SELECT id FROM runs"):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    doomed.signal(signal.SIGKILL)
    await doomed.wait()
    with pytest.raises(httpx.TransportError):
        await posting  # its client never hears back
    (run_id,) = taken
    return str(run_id)


async def post_once_room(client: httpx.AsyncClient, base: str, *, within: float) -> str:
    """POST until the cluster has room (`429` until then); the run's id."""
    url = f"{base}/v1/runs"
    async with asyncio.timeout(within):
        # A slot lapsing in Redis sends no event: ask again until it has.
        while (answer := await client.post(url, json=QUESTION)).status_code == 429:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert answer.status_code == 201, answer.text
    run_id: str = answer.json()["id"]
    return run_id


async def test_an_api_node_killed_before_it_stored_a_run_gives_its_slot_back_in_three_leases(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient, proxy: DropProxy
) -> None:
    """The run never reached PostgreSQL: nobody will ever execute it, so its slot must not
    hold one of `--max-active-runs` for the 120 s a queued run may wait."""
    proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    async with cluster_on(postgres_url, tmp_path, RESEARCH_MAX_ACTIVE_RUNS="1") as cluster:
        doomed, other = await asyncio.gather(
            cluster.api(RESEARCH_DATABASE_URL=proxied), cluster.api()
        )
        redis = aioredis.Redis.from_url(cluster.redis_url, decode_responses=True)
        try:
            proxy.go_silent()  # the run's insert never reaches PostgreSQL
            lost = await killed_while_posting(client, redis, cluster, doomed)
            await proxy.drop_all()
            assert postgres.query(postgres_url, "SELECT id FROM runs") == []

            # Its slot still counts a while: the dead node may have been about to store it.
            assert 0 < await slot_left_ms(redis, cluster, lost) <= SLOT_LEASES * LEASE_S * 1000
            refused = await client.post(f"{other.base}/v1/runs", json=QUESTION)
            assert refused.status_code == 429, refused.text
            # Then it lapses, three leases after the dead node's last heartbeat (not 120 s).
            made = await post_once_room(client, other.base, within=SLOT_LEASES * LEASE_S + 10)
            stored = postgres.query(postgres_url, "SELECT id FROM runs")
            assert [row["id"] for row in stored] == [made]
        finally:
            await redis.aclose()


async def test_a_run_stored_by_a_node_killed_before_it_queued_it_is_queued_with_its_slot(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient, proxy: DropProxy
) -> None:
    """PostgreSQL stored the run, its API node died before adding it to the queue: the sweep
    queues it, with a slot held for the queue (it still counts against the limit however long
    it waits for an executor), and an executor runs it."""
    proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    async with cluster_on(
        postgres_url, tmp_path, RESEARCH_MAX_ACTIVE_RUNS="1", RESEARCH_TOKEN_DELAY_MS="0"
    ) as cluster:
        doomed, other = await asyncio.gather(
            cluster.api(RESEARCH_DATABASE_URL=proxied), cluster.api()
        )
        redis = aioredis.Redis.from_url(cluster.redis_url, decode_responses=True)
        try:
            proxy.hold_answers_after(b"INSERT INTO runs")  # stored, its answer lost
            run_id = await killed_while_posting(
                client, redis, cluster, doomed, stored_in=postgres_url
            )
            await proxy.drop_all()
            stored = postgres.query(postgres_url, "SELECT id FROM runs")
            assert [row["id"] for row in stored] == [run_id]

            # The surviving node's sweep queues it after a lease, and holds its slot for the
            # queue from then on: far longer than the dead node's three leases.
            queue = f"{cluster.prefix}queue"
            async with asyncio.timeout(10 * LEASE_S):
                while not await redis.xlen(queue):  # noqa: ASYNC110 - Redis has no event
                    await asyncio.sleep(0.05)
            assert await slot_left_ms(redis, cluster, run_id) > 60_000
            refused = await client.post(f"{other.base}/v1/runs", json=QUESTION)
            assert refused.status_code == 429, refused.text

            await cluster.worker()
            ended = await follow(client, [other.base], run_id, timeout=60)
            assert ended.last.event == "done"
            snapshot = (await client.get(f"{other.base}/v1/runs/{run_id}")).json()
            assert snapshot["status"] == "completed", snapshot
            # Its end gave its slot back.
            await post_once_room(client, other.base, within=10)
        finally:
            await redis.aclose()


async def test_a_slot_is_kept_by_its_api_node_s_heartbeat_while_the_node_stores_the_run(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient, proxy: DropProxy
) -> None:
    """A slow insert (PostgreSQL busy for longer than the slot's three leases) keeps its slot:
    the live API node's heartbeat lengthens it, so the cluster never admits one too many."""
    proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    async with cluster_on(postgres_url, tmp_path, RESEARCH_MAX_ACTIVE_RUNS="1") as cluster:
        slow = await cluster.api(RESEARCH_DATABASE_URL=proxied)
        redis = aioredis.Redis.from_url(cluster.redis_url, decode_responses=True)
        try:
            proxy.go_silent()
            posting = asyncio.create_task(client.post(f"{slow.base}/v1/runs", json=QUESTION))
            active = f"{cluster.prefix}active"
            async with asyncio.timeout(10):
                while not (taken := await redis.zrange(active, 0, -1, withscores=True)):  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            ((run_id, first),) = taken
            async with asyncio.timeout(3 * LEASE_S):  # a heartbeat comes every third of one
                while (await redis.zscore(active, run_id) or 0) <= first:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            proxy.speak()
            made = await posting
            assert made.status_code == 201, made.text
            assert made.json()["id"] == run_id
            # Queued now: held for the queue, far longer than three leases.
            assert await slot_left_ms(redis, cluster, run_id) > 60_000
        finally:
            await redis.aclose()


async def test_whoever_reads_a_runs_done_finds_its_slot_free_and_its_execution_ended(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """At `--max-active-runs 1`, whoever sees a run's `done` may start the next run at once:
    also a listener that reads it from PostgreSQL (its stream opened on another node after
    the run ended), not only one that follows it live through Redis. So the executor gives
    the slot back before the `done` is committed, and the `done` is committed together with
    the execution's end. Here the end is held (another connection locks `executions`) while
    the run ends: meanwhile the slot is free and the `done` not yet readable."""
    async with cluster_on(postgres_url, tmp_path, RESEARCH_MAX_ACTIVE_RUNS="1") as cluster:
        api, worker = await asyncio.gather(cluster.api(), cluster.worker())
        redis = aioredis.Redis.from_url(cluster.redis_url, decode_responses=True)
        holder = await asyncpg.connect(postgres_url)
        try:
            body = {**QUESTION, "options": {"review_plan": True}}
            created = await client.post(f"{api.base}/v1/runs", json=body)
            assert created.status_code == 201, created.text
            run_id = created.json()["id"]
            run_url = f"{api.base}/v1/runs/{run_id}"
            await listen(client, f"{run_url}/events", stop=at_review, timeout=30)
            assert await redis.zscore(f"{cluster.prefix}active", run_id) is not None

            ending = holder.transaction()
            await ending.start()
            await holder.execute("LOCK TABLE executions IN SHARE MODE")  # updates wait
            approved = await client.post(f"{run_url}/plan", json={})  # approve
            assert approved.status_code == 202, approved.text
            await waiting_for_lock(holder, "executions", within=30)  # the run's end, held
            assert await redis.zscore(f"{cluster.prefix}active", run_id) is None
            snapshot = (await client.get(run_url)).json()
            assert snapshot["status"] not in ("completed", "failed", "cancelled"), snapshot
            await ending.rollback()

            ended = await follow(client, [api.base], run_id, timeout=30)
            assert ended.last.event == "done"
            (row,) = postgres.query(
                postgres_url, "SELECT ended_at FROM executions WHERE run_id = $1", run_id
            )
            assert row["ended_at"] is not None  # committed with the done
            following = await client.post(f"{api.base}/v1/runs", json=QUESTION)
            assert following.status_code == 201, following.text
            assert await worker.executed(following.json()["id"]) == 1
        finally:
            await holder.close()
            await redis.aclose()


def at_review(event: Any) -> bool:
    """The run's plan awaits its review."""
    return bool(event.event == "phase" and '"status":"review"' in event.data)


async def waiting_for_lock(conn: asyncpg.Connection[Any], table: str, *, within: float) -> None:
    """Until another backend waits for a lock on `table` (a lock granted sends no event)."""
    sql = "SELECT count(*) FROM pg_locks WHERE relation = $1::regclass AND NOT granted"
    async with asyncio.timeout(within):
        while not await conn.fetchval(sql, table):  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.02)
