"""Signing out in cluster mode: a session ended on one API node is refused by every node.

Real processes on a real Redis and PostgreSQL (their own schema and key prefix). Ended
sessions are kept in PostgreSQL, which every node reads; a run waits for its plan's review,
so a stream stays open for as long as the test needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests import postgres
from tests.cluster import Cluster, cluster_on
from tests.test_auth import CUT_WITHIN_S, bearer, cookie, following, read_to_end, read_until
from tests.test_session_sign_out import assert_ended, sign_in, sign_out

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

pytestmark = pytest.mark.timeout(180)

ALICE, BOB = "alice-secret-" + "a" * 32, "bob-secret-" + "b" * 32
SECRET = "sign-out-cluster-secret-0123456789abcdefghij"


@pytest.fixture
async def cluster(postgres_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
    async with cluster_on(
        postgres_url,
        tmp_path,
        RESEARCH_AUTH="keys",
        RESEARCH_API_KEYS_FILE=str(keys),
        RESEARCH_SECRET=SECRET,
        RESEARCH_TOKEN_DELAY_MS="0",
    ) as running:
        yield running


async def test_signing_out_on_one_node_ends_the_session_on_every_node(
    cluster: Cluster, client: httpx.AsyncClient, postgres_url: str
) -> None:
    a, b = await asyncio.gather(cluster.api(), cluster.api())
    leaving = await sign_in(client, a.base, ALICE)
    bobs = await sign_in(client, a.base, BOB)
    assert (await client.get(f"{b.base}/v1/runs", headers=cookie(leaving))).status_code == 200

    assert (await sign_out(client, a.base, leaving)).status_code == 204
    for node in (a, b):
        assert_ended(await client.get(f"{node.base}/v1/runs", headers=cookie(leaving)))
        assert_ended(await client.get(f"{node.base}/v1/session", headers=cookie(leaving)))
        mine = await client.get(f"{node.base}/v1/session", headers=cookie(bobs))
        assert mine.json()["name"] == "bob"
    fresh = await sign_in(client, b.base, ALICE)
    assert (await client.get(f"{a.base}/v1/runs", headers=cookie(fresh))).status_code == 200
    rows = postgres.query(postgres_url, "SELECT count(*) FROM ended_sessions")
    assert rows[0][0] == 1


async def test_a_sign_out_on_one_node_cuts_the_sessions_stream_on_another(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    a, b = await asyncio.gather(cluster.api(), cluster.api())
    await cluster.worker()
    leaving = await sign_in(client, a.base, ALICE)
    staying = await sign_in(client, a.base, ALICE)
    created = await client.post(
        f"{a.base}/v1/runs",
        json={"question": "Held at its review?", "options": {"review_plan": True}},
        headers=bearer(ALICE),
    )
    assert created.status_code == 201, created.text
    url = f"{b.base}/v1/runs/{created.json()['id']}/events"
    async with following(url, cookie(leaving)) as cut, following(url, cookie(staying)) as kept:
        cut_chunks = cut.aiter_raw()
        await read_until(cut_chunks, b'"status":"review"')
        assert (await sign_out(client, a.base, leaving)).status_code == 204
        # Node B sees it at its next check of open requests (every 2 s).
        async with asyncio.timeout(CUT_WITHIN_S):
            rest = await read_to_end(cut_chunks)
        assert b"event: done" not in rest
        # The other session's stream on the same node goes on to the end.
        cancel = await client.post(
            f"{a.base}/v1/runs/{created.json()['id']}/cancel", headers=bearer(ALICE)
        )
        assert cancel.status_code == 202, cancel.text
        async with asyncio.timeout(CUT_WITHIN_S):
            kept_rest = await read_to_end(kept.aiter_raw())
        assert b"event: done" in kept_rest
    assert_ended(await client.get(url, headers=cookie(leaving)))
