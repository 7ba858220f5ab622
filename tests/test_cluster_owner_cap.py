"""--max-active-runs-per-owner in cluster mode: one key's share holds across every node.

Real processes on a real Redis and PostgreSQL. Runs wait for their plan's review, so they
hold their slots for as long as the test needs, with no timing involved.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from tests import postgres
from tests.cluster import Cluster, cluster_on, follow
from tests.sse import listen
from tests.test_api import assert_problem
from tests.test_auth import bearer
from tests.test_plan_review import at_review

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

pytestmark = pytest.mark.timeout(180)

ALICE, BOB = "alice-secret-" + "a" * 32, "bob-secret-" + "b" * 32
PER_OWNER = 2
HELD = {"review_plan": True}


@pytest.fixture
async def cluster(postgres_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
    async with cluster_on(
        postgres_url,
        tmp_path,
        RESEARCH_AUTH="keys",
        RESEARCH_API_KEYS_FILE=str(keys),
        RESEARCH_SECRET="owner-cap-secret-0123456789abcdefghij",
        RESEARCH_MAX_ACTIVE_RUNS_PER_OWNER=str(PER_OWNER),
        RESEARCH_TOKEN_DELAY_MS="0",
    ) as running:
        yield running


async def create(client: httpx.AsyncClient, base: str, key: str, n: int) -> httpx.Response:
    body = {"question": f"Question {n}?", "options": HELD}
    return await client.post(f"{base}/v1/runs", json=body, headers=bearer(key))


def assert_refused(response: httpx.Response, owner: str) -> None:
    detail = assert_problem(response, 429)["detail"]
    assert detail.startswith(f"'{owner}' has {PER_OWNER} runs active in the cluster"), detail
    assert "--max-active-runs-per-owner" in detail
    assert response.headers["retry-after"] == "5"


async def end(client: httpx.AsyncClient, bases: list[str], key: str, run_id: str) -> None:
    """Cancel the run and follow it to its done (its slots are free by then)."""
    cancel = await client.post(f"{bases[0]}/v1/runs/{run_id}/cancel", headers=bearer(key))
    assert cancel.status_code == 202, cancel.text
    async with httpx.AsyncClient(timeout=30.0, headers=bearer(key)) as own:
        followed = await follow(own, bases, run_id)
    assert followed.last.event == "done"


async def test_one_key_s_share_holds_across_nodes_and_comes_back_when_its_runs_end(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    first, second = await asyncio.gather(cluster.api(), cluster.api())
    await cluster.worker()
    bases = [first.base, second.base]
    # A burst from one key, spread over both nodes: exactly its share, cluster-wide.
    burst = await asyncio.gather(
        *(create(client, bases[n % 2], ALICE, n) for n in range(4 * PER_OWNER))
    )
    accepted = [r for r in burst if r.status_code == 201]
    assert len(accepted) == PER_OWNER, [r.status_code for r in burst]
    for response in burst:
        if response.status_code != 201:
            assert_refused(response, "alice")
    # Another key still gets its own share, and no more.
    theirs = [await create(client, bases[n % 2], BOB, n) for n in range(PER_OWNER + 1)]
    assert [r.status_code for r in theirs] == [201] * PER_OWNER + [429]
    assert_refused(theirs[-1], "bob")

    # Ended runs give their owner's slots back, whichever node ended them.
    for response in accepted:
        await end(client, bases, ALICE, response.json()["id"])
    again = [await create(client, bases[n % 2], ALICE, n) for n in range(PER_OWNER + 1)]
    assert [r.status_code for r in again] == [201] * PER_OWNER + [429]

    # Redis holds each owner's runs in a set of its own, which lapses with its last slot:
    # 120 s while queued, then three leases (6 s here) from the executor's last heartbeat.
    redis = aioredis.Redis.from_url(cluster.redis_url, decode_responses=True)
    try:
        alice = f"{cluster.prefix}owner:alice:active"
        held = set(await redis.zrange(alice, 0, -1))
        assert held == {r.json()["id"] for r in again[:PER_OWNER]}
        assert 0 < await redis.pttl(alice) <= 120_000
        async with asyncio.timeout(10):
            while not 0 < await redis.pttl(alice) <= 6_000:  # noqa: ASYNC110 - Redis has no event
                await asyncio.sleep(0.05)
        assert await redis.zcard(alice) == PER_OWNER
        for key, responses in ((ALICE, again[:PER_OWNER]), (BOB, theirs[:PER_OWNER])):
            for response in responses:
                await end(client, bases, key, response.json()["id"])
        # Every slot given back: nothing is left behind.
        assert await redis.zcard(f"{cluster.prefix}active") == 0
        assert await redis.exists(alice, f"{cluster.prefix}owner:bob:active") == 0
    finally:
        await redis.aclose()


async def test_a_killed_worker_s_runs_give_their_owner_s_slots_back(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    api = await cluster.api()
    doomed = await cluster.worker()
    created = [await create(client, api.base, ALICE, n) for n in range(PER_OWNER + 1)]
    assert [r.status_code for r in created] == [201] * PER_OWNER + [429]
    run_ids = [r.json()["id"] for r in created[:PER_OWNER]]
    async with httpx.AsyncClient(timeout=30.0, headers=bearer(ALICE)) as alice:
        # Both execute on the worker, waiting for their plans' review: then it dies at once.
        for run_id in run_ids:
            await listen(alice, f"{api.base}/v1/runs/{run_id}/events", stop=at_review())
        doomed.signal(signal.SIGKILL)
        await doomed.wait()
        # The API node's sweep ends them as worker_lost, and gives her slots back with them.
        for run_id in run_ids:
            ended = await follow(alice, [api.base], run_id)
            assert ended.last.event == "done"
            assert '"worker_lost"' in ended.last.data
    after = [await create(client, api.base, ALICE, n) for n in range(PER_OWNER + 1)]
    assert [r.status_code for r in after] == [201] * PER_OWNER + [429]
