"""Cluster mode with real processes: API nodes and workers on a real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from research_service.cluster.redis_link import Keys
from research_service.runs.postgres_db import MIGRATION_LOCK
from tests import cli_process, postgres
from tests.cluster import (
    Cluster,
    assert_gap_free,
    cluster_on,
    executions,
    follow,
    post_run,
    redis_or_skip,
    seqs,
)
from tests.sse import after_event, listen

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
async def cluster(postgres_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with cluster_on(postgres_url, tmp_path, RESEARCH_TOKEN_DELAY_MS="25") as running:
        yield running


async def test_cluster_mode_refuses_a_store_other_than_postgres(tmp_path: Path) -> None:
    done = await cli_process.run(
        "serve",
        "--port",
        "0",
        "--redis-url",
        "redis://127.0.0.1:6379/0",
        "--store",
        "sqlite",
        "--data-dir",
        str(tmp_path),
    )
    assert done.returncode == 2
    assert "--redis-url turns on cluster mode" in done.stderr
    assert "add --store postgres" in done.stderr


async def test_cluster_mode_with_api_keys_needs_one_secret_for_every_node(tmp_path: Path) -> None:
    done = await cli_process.run(
        "serve",
        "--port",
        "0",
        "--auth",
        "keys",
        "--redis-url",
        "redis://127.0.0.1:6379/0",
        "--store",
        "postgres",
        "--database-url",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        "--data-dir",
        str(tmp_path),
    )
    assert done.returncode == 2
    assert "needs the same RESEARCH_SECRET on every node" in done.stderr
    assert not (tmp_path / "secret.key").exists()


async def test_a_worker_needs_a_cluster_and_no_execute_needs_one_too(tmp_path: Path) -> None:
    worker = await cli_process.run("worker", "--data-dir", str(tmp_path))
    assert worker.returncode == 2
    assert "a worker executes the runs of a cluster: give --redis-url" in worker.stderr
    api = await cli_process.run("serve", "--no-execute", "--data-dir", str(tmp_path))
    assert api.returncode == 2
    assert "--no-execute makes an API-only node of a cluster" in api.stderr


async def test_a_worker_refuses_a_health_port_it_cannot_use_before_it_takes_a_run(
    cluster: Cluster,
) -> None:
    env = cluster.node_env()
    wide = await cli_process.run("worker", "--health-port", "99999", **env)
    assert (wide.returncode, wide.stderr) == (
        2,
        "research-service: health port must be 0-65535, got 99999; fix --health-port or "
        "RESEARCH_HEALTH_PORT\n",
    )
    negative = await cli_process.run("worker", **{**env, "RESEARCH_HEALTH_PORT": "-1"})
    assert negative.returncode == 2
    assert "health port must be 0-65535, got -1" in negative.stderr
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        refused = await cli_process.run("worker", "--health-port", str(port), **env)
    assert refused.returncode == 2
    assert refused.stderr.endswith(
        f"research-service: port {port} on 127.0.0.1 is already in use by another process; "
        "stop it or choose another --health-port\n"
    )
    assert "Traceback" not in refused.stderr
    assert "taking runs" not in refused.stderr


async def test_a_worker_health_says_starting_until_the_worker_takes_runs(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    # Another process migrating the database holds the migration lock: the worker's start-up
    # waits for it, with its health port already open.
    migrating = await asyncpg.connect(cluster.database_url)
    try:
        held = migrating.transaction()
        await held.start()
        await migrating.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        worker = await cluster.worker("--health-port", "0", ready=False)
        named = await worker.wait_log(rb"worker health: (http://127\.0\.0\.1:\d+/healthz)")
        health = named[1].decode()
        starting = await client.get(health)
        assert (starting.status_code, starting.json()) == (503, {"status": "starting"})
        assert b"taking runs" not in worker.log
        await held.rollback()
    finally:
        await migrating.close()
    await worker.wait_log(rb"worker \S+: taking runs")
    taking = await client.get(health)
    assert taking.status_code == 200
    assert taking.json()["status"] == "ok"


async def test_a_run_made_on_one_node_streams_whole_from_another_and_resumes_on_either(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    first, second = await asyncio.gather(cluster.api(), cluster.api())
    worker = await cluster.worker()
    run_id = await post_run(client, first.base, "How does photosynthesis work?")
    # Halfway through on the second node, then the rest from the first.
    head = await listen(
        client, f"{second.base}/v1/runs/{run_id}/events", stop=after_event("token", 5), timeout=30
    )
    tail = await listen(
        client, f"{first.base}/v1/runs/{run_id}/events", last_event_id=head.ids[-1], timeout=30
    )
    whole = await listen(client, f"{second.base}/v1/runs/{run_id}/events", timeout=30)
    assert_gap_free(whole.ids, run_id)
    assert head.ids + tail.ids == whole.ids
    assert [e.data for e in head.events + tail.events] == [e.data for e in whole.events]
    assert whole.last[0] == "done"
    assert whole.last[1]["status"] == "completed"
    # Executed by the worker, exactly once.
    assert await worker.executed(run_id) == 1
    # Each node's start says what it does.
    assert re.search(rb"cluster node \S+ executes runs \(lease", worker.log)
    assert re.search(rb"cluster node \S+ serves the API \(lease", first.log)
    # Resuming after the done: 204 on either node, so a browser stops reconnecting.
    for node in (first, second):
        ended = await client.get(
            f"{node.base}/v1/runs/{run_id}/events", headers={"Last-Event-ID": whole.ids[-1]}
        )
        assert ended.status_code == 204
    # Snapshots and recordings agree on every node.
    snapshots = [(await client.get(f"{n.base}/v1/runs/{run_id}")).json() for n in (first, second)]
    assert snapshots[0] == snapshots[1]
    assert snapshots[0]["event_count"] == len(whole.ids)
    recordings = [
        (await client.get(f"{n.base}/v1/runs/{run_id}/recording")).content for n in (first, second)
    ]
    assert recordings[0] == recordings[1]
    # A header line, then one line per event.
    assert len(recordings[0].splitlines()) == 1 + len(whole.ids)


async def test_a_cancel_on_any_node_stops_the_run_within_a_second(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    cluster.env["RESEARCH_TOKEN_DELAY_MS"] = "200"
    first, second = await asyncio.gather(cluster.api(), cluster.api())
    await cluster.worker()
    run_id = await post_run(client, first.base, "How does photosynthesis work?")
    url = f"{second.base}/v1/runs/{run_id}/events"
    started = await listen(client, url, stop=after_event("token"), timeout=30)
    asked = time.monotonic()
    response = await client.post(f"{second.base}/v1/runs/{run_id}/cancel")
    assert response.status_code == 202
    assert response.json()["cancelling"] is True
    rest = await listen(client, url, last_event_id=started.ids[-1], timeout=30)
    took = time.monotonic() - asked
    assert rest.last[0] == "done"
    assert rest.last[1]["status"] == "cancelled"
    assert rest.last[1]["error"]["code"] == "cancelled"
    assert took < 1.0, f"the run stopped {took:.2f} s after the cancel"
    assert_gap_free(started.ids + rest.ids, run_id)
    # A finished run: nothing to cancel, from any node.
    again = await client.post(f"{first.base}/v1/runs/{run_id}/cancel")
    assert again.json()["cancelling"] is False


async def test_max_active_runs_holds_for_the_whole_cluster(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    cluster.env.update(RESEARCH_MAX_ACTIVE_RUNS="2", RESEARCH_TOKEN_DELAY_MS="200")
    first, second = await asyncio.gather(cluster.api(), cluster.api())
    await asyncio.gather(cluster.worker(), cluster.worker())
    runs = [
        await post_run(client, node.base, "How does photosynthesis work?")
        for node in (first, second)
    ]
    refused = await client.post(f"{second.base}/v1/runs", json={"question": "A third one?"})
    assert refused.status_code == 429
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert "2 runs are active in the cluster, the limit is 2" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) > 0
    # Once one ends (its done seen), there is room again at once.
    await client.post(f"{first.base}/v1/runs/{runs[0]}/cancel")
    ended = await follow(client, [first.base], runs[0], timeout=30)
    assert ended.last.event == "done"
    again = await client.post(f"{second.base}/v1/runs", json={"question": "Now?"})
    assert again.status_code == 201, again.text


async def test_two_workers_execute_each_of_many_runs_exactly_once(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    cluster.env["RESEARCH_TOKEN_DELAY_MS"] = "0"
    api = await cluster.api()
    workers = await asyncio.gather(cluster.worker(), cluster.worker())
    runs = await asyncio.gather(
        *(post_run(client, api.base, f"How does photosynthesis work, {i}?") for i in range(12))
    )
    results = await asyncio.gather(*(follow(client, [api.base], run_id) for run_id in runs))
    for run_id, result in zip(runs, results, strict=True):
        assert_gap_free(result.ids, run_id)
        assert result.last.event == "done"
        assert json.loads(result.last.data)["status"] == "completed"
        planning = [
            e
            for e in result.events
            if e.event == "phase" and '"planning","status":"started"' in e.data
        ]
        assert len(planning) == 1
        assert await executions(list(workers), run_id) == 1
    claims = postgres.query(
        cluster.database_url, "SELECT executor, ended_at FROM executions ORDER BY run_id"
    )
    assert len(claims) == len(runs)
    assert all(row["ended_at"] is not None for row in claims)
    assert {row["executor"] for row in claims} <= {w.name for w in workers}
    # Each queue entry went once its run was taken: the queue does not grow by a run each.
    redis = await redis_or_skip()
    try:
        assert await redis.xlen(Keys(cluster.prefix).queue) == 0
    finally:
        await redis.aclose()


async def test_the_one_shot_research_stream_runs_in_the_cluster_and_resumes_on_another_node(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    first, second = await asyncio.gather(cluster.api(), cluster.api())
    await cluster.worker()
    query = "q=How+does+photosynthesis+work%3F"
    head = await listen(
        client,
        f"{first.base}/v1/research?{query}",
        stop=after_event("token", 3),
        timeout=30,
    )
    run_id = head.ids[0].split(":")[0]
    rest = await listen(
        client,
        f"{second.base}/v1/research?{query}",
        last_event_id=head.ids[-1],
        timeout=30,
    )
    assert_gap_free(head.ids + rest.ids, run_id)
    assert rest.last[0] == "done"
    assert rest.last[1]["status"] == "completed"


async def test_a_plan_review_is_decided_on_any_node_and_only_once(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    first, second = await asyncio.gather(cluster.api(), cluster.api())
    await cluster.worker()
    body = {"question": "How does photosynthesis work?", "options": {"review_plan": True}}
    created = await client.post(f"{first.base}/v1/runs", json=body)
    run_id = created.json()["id"]

    def at_review(sse: Any) -> bool:
        return sse.event == "phase" and '"status":"review"' in sse.data

    head = await listen(
        client, f"{second.base}/v1/runs/{run_id}/events", stop=at_review, timeout=30
    )
    snapshot = (await client.get(f"{first.base}/v1/runs/{run_id}")).json()
    assert snapshot["awaiting"] == "plan_review"
    listed = (await client.get(f"{second.base}/v1/runs?awaiting=plan_review")).json()
    assert [r["id"] for r in listed["runs"]] == [run_id]
    # A decision for a round that has not begun is refused, on any node.
    early = await client.post(f"{second.base}/v1/runs/{run_id}/plan", json={"round": 2})
    assert early.status_code == 409
    assert "round 2 has not begun; the plan waits in round 1" in early.json()["detail"]
    # Both nodes at once: exactly one decision is taken.
    answers = await asyncio.gather(
        client.post(f"{first.base}/v1/runs/{run_id}/plan", json={"queries": ["chlorophyll"]}),
        client.post(
            f"{second.base}/v1/runs/{run_id}/plan", json={"queries": ["leaves"], "round": 1}
        ),
    )
    assert sorted(a.status_code for a in answers) == [202, 409]
    winner = next(a for a in answers if a.status_code == 202)
    expected = ["chlorophyll"] if winner is answers[0] else ["leaves"]
    rest = await listen(
        client, f"{first.base}/v1/runs/{run_id}/events", last_event_id=head.ids[-1], timeout=30
    )
    assert_gap_free(head.ids + rest.ids, run_id)
    completed = next(
        json.loads(e.data) for e in rest.events if e.event == "phase" and '"completed"' in e.data
    )
    assert completed["queries"] == expected
    assert completed["review"] == "edited"
    assert rest.last[1]["status"] == "completed"


async def test_a_resume_from_an_event_not_on_this_node_yet_waits_for_what_follows_it(
    postgres_url: str, tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """A client resumes on an API node from an event that node does not have yet (its
    executor's commits stalled and Redis lost the live window, as a chaos campaign did; here,
    more simply, an id a few seconds ahead of the run). It is not told `400` "never issued"
    while the run goes on: it gets the events after that id as they come, then the `done`."""
    async with cluster_on(postgres_url, tmp_path, RESEARCH_TOKEN_DELAY_MS="200") as cluster:
        api = await cluster.api()
        await cluster.worker()
        run_id = await post_run(client, api.base, "How does photosynthesis work?")
        head = await listen(
            client, f"{api.base}/v1/runs/{run_id}/events", stop=after_event("token", 2), timeout=30
        )
        ahead = seqs(head.ids)[-1] + 15  # about 3 s away: longer than a resume waits (2 s)
        rest = await listen(
            client,
            f"{api.base}/v1/runs/{run_id}/events",
            last_event_id=f"{run_id}:{ahead}",
            timeout=60,
        )
        assert rest.status == 200
        assert seqs(rest.ids)[0] == ahead + 1
        assert_gap_free([f"{run_id}:{n}" for n in range(1, ahead + 1)] + rest.ids, run_id)
        assert rest.last[0] == "done"
