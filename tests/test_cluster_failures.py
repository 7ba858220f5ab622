"""Cluster mode under real faults: SIGKILL, SIGTERM, a restarted API node, a restarted Redis."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import httpx
import pytest

from research_service.cluster.redis_link import GROUP, Keys
from tests import postgres
from tests.cluster import (
    Followed,
    RedisServer,
    assert_gap_free,
    cluster_on,
    executions,
    follow,
    post_run,
    redis_or_skip,
)
from tests.drop_proxy import DropProxy
from tests.metrics_text import metric_samples
from tests.sse import after_event, listen

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

METRICS_TOKEN = "worker-metrics-token-0123456789"

pytestmark = pytest.mark.timeout(240)
QUESTION = "How does photosynthesis work?"


def done_of(events: list[object]) -> dict[str, object]:
    last = events[-1]
    assert last.event == "done", last.event
    data: dict[str, object] = json.loads(last.data)
    return data


async def test_a_killed_executor_s_run_ends_worker_lost_for_every_listener_on_every_node(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with cluster_on(postgres_url, tmp_path, RESEARCH_TOKEN_DELAY_MS="150") as cluster:
        first, second = await asyncio.gather(cluster.api(), cluster.api())
        doomed = await cluster.worker()
        run_id = await post_run(client, first.base, QUESTION)
        # Listeners on both nodes see the answer begin; then the executor dies at once.
        heads = await asyncio.gather(
            *(
                listen(client, f"{n.base}/v1/runs/{run_id}/events", stop=after_event("token", 3))
                for n in (first, second)
            )
        )
        doomed.signal(signal.SIGKILL)
        killed = time.monotonic()
        await doomed.wait()
        rests = await asyncio.gather(
            *(
                listen(
                    client, f"{n.base}/v1/runs/{run_id}/events", last_event_id=h.ids[-1], timeout=30
                )
                for n, h in zip((first, second), heads, strict=True)
            )
        )
        noticed = time.monotonic() - killed
        for head, rest in zip(heads, rests, strict=True):
            events = head.events + rest.events
            assert_gap_free([e.id for e in events], run_id)
            assert [e.event for e in events[-2:]] == ["error", "done"]
            assert json.loads(events[-2].data)["code"] == "worker_lost"
            done = done_of(events)
            assert done["status"] == "failed"
            assert done["error"]["code"] == "worker_lost"  # type: ignore[index]
        assert [e.data for e in rests[0].events[-2:]] == [e.data for e in rests[1].events[-2:]]
        # Lease 2 s: noticed within about a lease (the sweep runs every third of one).
        assert noticed < 2 * 2 + 2, f"noticed {noticed:.1f} s after the kill"
        snapshot = (await client.get(f"{second.base}/v1/runs/{run_id}")).json()
        assert snapshot["status"] == "failed"
        rows = postgres.query(cluster.database_url, "SELECT ended_at FROM executions")
        assert [row["ended_at"] is not None for row in rows] == [True]


async def test_a_killed_worker_leaves_the_run_queue_s_group_once_its_lease_is_over(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """Each worker process reads the queue under its own name: without the sweep's tidying,
    the consumer group kept one consumer for every worker ever started."""
    async with cluster_on(postgres_url, tmp_path, RESEARCH_TOKEN_DELAY_MS="0") as cluster:
        api = await cluster.api()
        doomed = await cluster.worker()
        assert await executions([doomed], await post_run(client, api.base, QUESTION)) == 1
        doomed.signal(signal.SIGKILL)
        await doomed.wait()
        successor = await cluster.worker()
        assert await executions([successor], await post_run(client, api.base, QUESTION)) == 1
        redis = await redis_or_skip(cluster.redis_url)
        try:
            queue = Keys(cluster.prefix).queue
            names = {c["name"].decode() for c in await redis.xinfo_consumers(queue, GROUP)}
            assert names == {doomed.name, successor.name}
            # Every node sweeps: whichever comes first removes it, and says so.
            said = [
                asyncio.ensure_future(n.wait_log(rb"removed the consumers of 1 departed executors"))
                for n in (api, successor)
            ]
            try:
                done, _ = await asyncio.wait(said, return_when=asyncio.FIRST_COMPLETED)
                await done.pop()
            finally:
                for wait in said:
                    wait.cancel()
            left = [c["name"].decode() for c in await redis.xinfo_consumers(queue, GROUP)]
            assert left == [successor.name]
        finally:
            await redis.aclose()


async def test_sigterm_drains_a_worker_its_runs_finish_and_it_takes_no_new_ones(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with cluster_on(postgres_url, tmp_path, RESEARCH_TOKEN_DELAY_MS="60") as cluster:
        api = await cluster.api()
        draining = await cluster.worker("--health-port", "0", RESEARCH_METRICS_TOKEN=METRICS_TOKEN)
        # Port 0: the kernel picks one, and the log names it.
        named = await draining.wait_log(rb"worker health: http://127\.0\.0\.1:(\d+)/healthz")
        health_port = int(named[1])
        health = f"http://127.0.0.1:{health_port}/healthz"
        healthy = await client.get(health)
        assert healthy.status_code == 200
        assert healthy.content.startswith(b'{"status":"ok","node":'), healthy.content
        run_id = await post_run(client, api.base, QUESTION)
        head = await listen(
            client, f"{api.base}/v1/runs/{run_id}/events", stop=after_event("token")
        )
        # The worker's own metrics, on its health port, for the metrics token only.
        scraped = f"http://127.0.0.1:{health_port}/metrics"
        refused = await client.get(scraped)
        assert refused.status_code == 401
        # Its answers are the service's own: problem+json, its Server header, no versions.
        assert refused.headers["Content-Type"] == "application/problem+json"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        unknown = await client.get(f"http://127.0.0.1:{health_port}/nothing")
        assert unknown.status_code == 404
        assert unknown.headers["Content-Type"] == "application/problem+json"
        assert "aiohttp" not in unknown.headers["Server"]
        answer = await client.get(scraped, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert answer.status_code == 200
        worker_samples = metric_samples(answer.text)
        assert worker_samples["research_active_runs"] == 1
        assert worker_samples["research_events_appended_total"] >= len(head.ids)
        # As `serve` does, start-up's heap is out of the collector's reach.
        assert worker_samples["research_gc_frozen_objects"] > 10_000
        since = len(draining.log)
        draining.signal(signal.SIGTERM)
        await draining.wait_log(rb"worker stopping: no new runs", since=since)
        assert (await client.get(health)).status_code == 503
        assert (await client.get(health)).json()["status"] == "draining"
        # A run asked for while it drains waits for another executor.
        later = await post_run(client, api.base, QUESTION)
        rest = await listen(
            client, f"{api.base}/v1/runs/{run_id}/events", last_event_id=head.ids[-1], timeout=60
        )
        assert done_of(rest.events)["status"] == "completed"
        assert_gap_free(head.ids + rest.ids, run_id)
        assert await draining.wait() == 0
        assert b"executing here" in draining.log
        assert f"run {later}".encode() not in draining.log
        successor = await cluster.worker()
        taken = await follow(client, [api.base], later)
        assert json.loads(taken.last.data)["status"] == "completed"
        assert await successor.executed(later) == 1


async def test_a_drain_longer_than_drain_s_cancels_the_rest_as_shutdown(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with cluster_on(postgres_url, tmp_path, RESEARCH_TOKEN_DELAY_MS="300") as cluster:
        api = await cluster.api()
        worker = await cluster.worker("--drain-s", "1")
        run_id = await post_run(client, api.base, QUESTION)
        head = await listen(
            client, f"{api.base}/v1/runs/{run_id}/events", stop=after_event("token")
        )
        worker.signal(signal.SIGTERM)
        rest = await listen(
            client, f"{api.base}/v1/runs/{run_id}/events", last_event_id=head.ids[-1], timeout=30
        )
        done = done_of(rest.events)
        assert done["status"] == "cancelled"
        assert done["error"]["code"] == "shutdown"  # type: ignore[index]
        assert await worker.wait() == 0


async def test_an_api_node_restarted_under_20_listeners_loses_none_of_them(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with cluster_on(postgres_url, tmp_path, RESEARCH_TOKEN_DELAY_MS="80") as cluster:
        restarting, steady = await asyncio.gather(cluster.api(), cluster.api())
        await cluster.worker()
        run_id = await post_run(client, steady.base, QUESTION)
        results = [Followed() for _ in range(20)]
        listeners = [
            asyncio.create_task(
                follow(client, [restarting.base, steady.base], run_id, followed=result)
            )
            for result in results
        ]
        # Everyone is streaming through the node that restarts...
        await asyncio.gather(*(result.reach(3) for result in results))
        assert all(r.connections == [restarting.base] for r in results)
        restarting.signal(signal.SIGTERM)
        assert await restarting.wait() == 0
        again = await cluster.restart(restarting)
        assert again.base == restarting.base
        for result in await asyncio.gather(*listeners):
            assert_gap_free(result.ids, run_id)
            assert json.loads(result.last.data)["status"] == "completed"
            assert len(result.connections) >= 2  # it reconnected
            assert all(status == 200 for status in result.statuses)
        # The restarted node serves the whole run too.
        whole = await listen(client, f"{again.base}/v1/runs/{run_id}/events")
        assert whole.ids == results[0].ids


async def test_runs_and_listeners_survive_a_redis_restart(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    redis = await RedisServer.started(tmp_path)
    try:
        async with cluster_on(
            postgres_url, tmp_path, redis_url=redis.url, RESEARCH_TOKEN_DELAY_MS="80"
        ) as cluster:
            first, second = await asyncio.gather(cluster.api(), cluster.api())
            worker = await cluster.worker()
            run_id = await post_run(client, first.base, QUESTION)
            head = await listen(
                client, f"{second.base}/v1/runs/{run_id}/events", stop=after_event("token", 2)
            )
            await redis.stop()
            # While Redis is down: snapshots still answer (PostgreSQL); a new run is a 503
            # problem that says why, not a 500.
            snapshot = await client.get(f"{first.base}/v1/runs/{run_id}")
            assert snapshot.status_code == 200
            refused = await client.post(f"{first.base}/v1/runs", json={"question": QUESTION})
            assert refused.status_code == 503
            assert refused.headers["Content-Type"].startswith("application/problem+json")
            assert "Redis" in refused.json()["detail"]
            # The listener goes on (from PostgreSQL while Redis is away).
            middle = await listen(
                client,
                f"{second.base}/v1/runs/{run_id}/events",
                last_event_id=head.ids[-1],
                stop=after_event("token", 3),
                timeout=30,
            )
            await redis.start()
            rest = await listen(
                client,
                f"{second.base}/v1/runs/{run_id}/events",
                last_event_id=middle.ids[-1],
                timeout=60,
            )
            events = head.events + middle.events + rest.events
            assert_gap_free([e.id for e in events], run_id)
            assert done_of(events)["status"] == "completed"
            assert worker.process.returncode is None
            # And the cluster takes new runs again (a client's connection to the old Redis
            # may fail one request first).
            for _ in range(3):
                response = await client.post(f"{first.base}/v1/runs", json={"question": QUESTION})
                if response.status_code != 503:
                    break
            assert response.status_code == 201, response.text
            fresh = await follow(client, [second.base], response.json()["id"])
            assert json.loads(fresh.last.data)["status"] == "completed"
    finally:
        await redis.stop()


async def test_listeners_on_other_nodes_keep_a_run_from_being_abandoned(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with cluster_on(
        postgres_url, tmp_path, RESEARCH_TOKEN_DELAY_MS="60", RESEARCH_ABANDON_AFTER_S="1"
    ) as cluster:
        api = await cluster.api()
        worker = await cluster.worker()
        # Followed on the API node only (the worker has none): it runs to its end (~4 s).
        followed = await post_run(client, api.base, QUESTION)
        result = await follow(client, [api.base], followed)
        assert json.loads(result.last.data)["status"] == "completed"
        assert result.events[-1].id.endswith(f":{len(result.events)}")
        # Nobody listening anywhere: abandoned after the second.
        lonely = await post_run(client, api.base, QUESTION)
        await worker.wait_log(f"run {lonely} cancelled in".encode())
        snapshot = (await client.get(f"{api.base}/v1/runs/{lonely}")).json()
        assert snapshot["status"] == "cancelled"
        assert snapshot["error"]["code"] == "abandoned"


async def test_a_run_whose_listener_on_another_node_left_is_abandoned_only_a_wait_later(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """A worker has no listener of its own: its abandon timer starts at the run's creation.
    A listener on an API node that left just before the timer fired once had the run
    abandoned at once; the wait now counts from when that listener left (docs/api.md)."""
    async with cluster_on(
        postgres_url, tmp_path, RESEARCH_TOKEN_DELAY_MS="100", RESEARCH_ABANDON_AFTER_S="2"
    ) as cluster:
        api = await cluster.api()
        worker = await cluster.worker()
        posted = time.monotonic()
        run_id = await post_run(client, api.base, QUESTION)

        def late(_: object) -> bool:  # an event 1.5 s in: then the listener goes
            return time.monotonic() - posted >= 1.5

        heard = await listen(client, f"{api.base}/v1/runs/{run_id}/events", stop=late)
        left = time.monotonic()
        assert heard.names[-1] != "done"
        await worker.wait_log(f"run {run_id} cancelled in".encode(), timeout=30)
        assert time.monotonic() - left >= 2.0  # not 0.5 s after, when the first timer fired
        snapshot = (await client.get(f"{api.base}/v1/runs/{run_id}")).json()
        assert snapshot["error"]["code"] == "abandoned"


async def test_a_run_stored_though_its_creation_was_answered_503_never_runs(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """PostgreSQL takes the run's insert but its answer is lost (held by a proxy until the
    API node gives up): the client is told `503` and may ask again. The stored run is queued
    by the sweep all the same; it must not run a second research: it ends cancelled at once."""
    proxy = DropProxy("127.0.0.1", 5432)
    await proxy.start()
    proxied = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    try:
        async with cluster_on(proxied, tmp_path, RESEARCH_TOKEN_DELAY_MS="0") as cluster:
            api = await cluster.api()
            proxy.hold_answers_after(b"INSERT INTO runs")
            body = {"question": "How does photosynthesis work?"}
            refused = await client.post(f"{api.base}/v1/runs", json=body, timeout=60)
            proxy.speak()
            assert refused.status_code == 503, refused.text
            (stored,) = postgres.query(postgres_url, "SELECT id FROM runs")  # made after all
            run_id = stored["id"]

            await cluster.worker()  # the sweep queues it, the worker claims it
            followed = await listen(client, f"{api.base}/v1/runs/{run_id}/events", timeout=60)
            assert followed.last[0] == "done"
            snapshot = (await client.get(f"{api.base}/v1/runs/{run_id}")).json()
            assert snapshot["status"] == "cancelled"
            assert snapshot["error"]["code"] == "abandoned"
            assert "answered 503" in snapshot["error"]["message"]
            assert snapshot["answer"] == ""
    finally:
        proxy.speak()
        await proxy.close()
