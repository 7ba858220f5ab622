"""Webhooks in cluster mode: deliveries kept in PostgreSQL, sent once by whichever node claims."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from research_service.events import Event
from research_service.runs import postgres_db
from research_service.runs.models import RunRecord
from research_service.runs.postgres_log import PostgresEventLog
from research_service.webhooks.outbox import Delivery, new_delivery_id
from research_service.webhooks.postgres_outbox import PostgresOutbox
from research_service.webhooks.signing import SERVER_SCOPE, derived_secret
from tests import postgres
from tests.cluster import Cluster, cluster_on, post_run
from tests.webhook_receiver import Receiver

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

pytestmark = pytest.mark.timeout(180)

SECRET = "cluster-webhook-secret-0123456789abcdefghij"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


@pytest.fixture
async def cluster(postgres_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster_on(
        postgres_url,
        tmp_path,
        RESEARCH_TOKEN_DELAY_MS="0",
        RESEARCH_SECRET=SECRET,
        RESEARCH_FETCH_ALLOW="127.0.0.1",
    ) as running:
        yield running


async def test_every_run_s_webhook_is_sent_once_by_one_node(
    cluster: Cluster, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    first, second = await asyncio.gather(cluster.api(), cluster.api())
    await cluster.worker()
    run_ids = [
        await post_run(client, node.base, f"Question {n}?", webhook={"url": receiver.url()})
        for n, node in enumerate((first, second) * 3)
    ]
    got = await receiver.wait_for(len(run_ids), timeout=60)
    secret = derived_secret(SECRET.encode(), SERVER_SCOPE)
    assert sorted(r.verify(secret)["data"]["run_id"] for r in got) == sorted(run_ids)
    # Sent once: every node looks at the outbox, one claim wins. The snapshot, on either
    # node, says so (the outbox is in the shared database).
    for run_id in run_ids:
        async with asyncio.timeout(10):
            while True:
                snapshot = (await client.get(f"{second.base}/v1/runs/{run_id}")).json()
                if snapshot["webhooks"][0]["state"] == "delivered":
                    break
                await asyncio.sleep(0.05)
        assert snapshot["webhooks"][0]["attempts"] == 1
    assert len(receiver.received) == len(run_ids)


async def test_one_claim_wins_and_a_dead_holder_s_claim_runs_out(postgres_url: str) -> None:
    await postgres_db.migrate(postgres_url)
    pool = await postgres_db.open_pool(postgres_url)
    log = PostgresEventLog(pool)
    try:
        record = RunRecord("00000000000000aa", "q?")
        await log.create_run(record)
        outbox = PostgresOutbox(pool)
        delivery = Delivery(new_delivery_id(), record.id, "http://x.test/", SERVER_SCOPE, "b")
        await outbox.add([delivery])
        now = time.time()
        # Not due while its run goes on.
        assert await outbox.due(now=now) == []
        assert await outbox.pending()
        await log.append(Event.create(record.id, 1, "phase", {"phase": "planning"}, t_ms=1))
        assert await outbox.due(now=now) == []
        await log.append(Event.create(record.id, 2, "done", {"status": "cancelled"}, t_ms=2))
        assert [d.id for d in await outbox.due(now=now)] == [delivery.id]
        claims = await asyncio.gather(
            *(outbox.claim(delivery.id, now=now, until=now + 60) for _ in range(5))
        )
        assert sorted(claims) == [False, False, False, False, True]
        assert await outbox.due(now=now) == []
        # Held until now + 60: after that any node may take it.
        assert [d.id for d in await outbox.due(now=now + 61)] == [delivery.id]
        assert await outbox.claim(delivery.id, now=now + 61, until=now + 121)
        assert (await outbox.of_run(record.id))[0].state == "pending"
    finally:
        await log.close()
        await pool.close()
