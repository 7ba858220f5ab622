"""`GET /metrics` after real runs, read with prometheus_client's own parser."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from research_service.auth.key_store import SqliteKeys
from research_service.runs.sqlite_log import RUN_STORE_FILE
from tests.conftest import MakeService, Service
from tests.sse import listen

SECRET = "m" * 40


async def scrape(service: Service, client: httpx.AsyncClient, **headers: str) -> dict[str, float]:
    """Every sample of the scrape, by name and labels (`name{k="v",...}`)."""
    response = await client.get(service.url("/metrics"), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def test_the_counts_follow_real_runs(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(max_active_runs=1)
    before = await scrape(service, client)
    assert before["research_runs_created_total"] == 0
    assert before["research_active_runs"] == 0

    first = await service.create(client, "What is up?")
    whole = await listen(client, service.url(f"/v1/runs/{first}/events"), timeout=10)
    assert whole.last[0] == "done"
    # Resumed from the middle: one resume, the rest delivered again.
    await listen(
        client,
        service.url(f"/v1/runs/{first}/events"),
        last_event_id=whole.ids[2],
        timeout=10,
    )
    service.llm.hold_after = 1
    second = await service.create(client, "And now?")
    await service.until_held()
    refused = await client.post(service.url("/v1/runs"), json={"question": "A third?"})
    assert refused.status_code == 429
    await client.post(service.url(f"/v1/runs/{second}/cancel"))
    await service.wait_done(second)

    after = await scrape(service, client)
    assert after["research_runs_created_total"] == 2
    assert after['research_runs_finished_total{code="",status="completed"}'] == 1
    assert after['research_runs_finished_total{code="cancelled",status="cancelled"}'] == 1
    assert after["research_active_runs"] == 0
    appended = len(whole.ids) + len(
        (await listen(client, service.url(f"/v1/runs/{second}/events"), timeout=10)).ids
    )
    assert after["research_events_appended_total"] == appended
    # Delivered: the first run whole, its resumed rest (the second run's listen came after).
    assert after["research_events_delivered_total"] == len(whole.ids) * 2 - 3
    assert after["research_resumes_total"] == 1
    assert after['research_refusals_total{status="429"}'] == 1
    assert after['research_refusals_total{status="503"}'] == 0
    assert after['research_phase_seconds_count{phase="planning"}'] == 2
    assert after['research_phase_seconds_count{phase="synthesizing"}'] == 1
    assert after["research_open_streams"] == 0
    assert after['research_event_loop_lag_seconds_bucket{le="+Inf"}'] >= 0


async def test_open_streams_are_counted_while_they_are_open(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.hold_after = 1
    run_id = await service.create(client)
    async with client.stream("GET", service.url(f"/v1/runs/{run_id}/events")) as response:
        async for line in response.aiter_lines():
            if line.startswith("event: token"):
                break
        assert (await scrape(service, client))["research_open_streams"] == 1
    service.llm.release.set()
    await service.wait_done(run_id)


async def test_with_api_keys_only_an_admin_key_reads_the_metrics(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    keys = SqliteKeys(tmp_path / "data" / RUN_STORE_FILE)
    try:
        _, alice = keys.create("alice", admin=False)
        _, root = keys.create("root", admin=True)
        service = await make_service(store="sqlite", auth="keys", secret=SECRET)
        anonymous = await client.get(service.url("/metrics"))
        assert anonymous.status_code == 401
        user = await client.get(
            service.url("/metrics"), headers={"Authorization": f"Bearer {alice}"}
        )
        assert user.status_code == 403
        assert "admin" in json.loads(user.text)["detail"]
        samples = await scrape(service, client, Authorization=f"Bearer {root}")
        assert samples["research_runs_created_total"] == 0
    finally:
        keys.close()
