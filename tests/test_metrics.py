"""`GET /metrics` after real runs, read with prometheus_client's own parser."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse
from prometheus_client.parser import text_string_to_metric_families

from research_service.app import create_app
from research_service.auth.key_store import SqliteKeys
from research_service.cluster.redis_link import GROUP
from research_service.collector import freeze_startup_objects
from research_service.pipeline.synthesizer import MAX_PIECE_CHARS
from research_service.runs.sqlite_log import RUN_STORE_FILE
from research_service.settings import Settings
from research_service.web.metrics import forget_startup_stalls
from tests import postgres
from tests.cluster import CORPUS, REDIS_URL, delete_prefix, redis_or_skip
from tests.conftest import MakeService, Service, ServiceTestServer
from tests.fake_openai import FakeOpenAI, HTTPError, Reply, rate_limited, wants_json
from tests.fake_searxng import FakeSearxng, Result, Status
from tests.fakes import ScriptedLLM, ScriptedSearch
from tests.metrics_text import metric_samples
from tests.openai_settings import openai_settings
from tests.sse import Received, listen

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

SECRET = "m" * 40
METRICS_TOKEN = "metrics-scraper-" + "t" * 32


async def scrape(service: Service, client: httpx.AsyncClient, **headers: str) -> dict[str, float]:
    """Every sample of the scrape, by name and labels (`name{k="v",...}`)."""
    response = await client.get(service.url("/metrics"), headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return metric_samples(response.text)


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


async def test_a_blocked_event_loop_shows_as_lag(
    service: Service, client: httpx.AsyncClient
) -> None:
    """The service shares this test's loop: blocking it here is a real 80 ms stall."""
    every = 'research_event_loop_lag_seconds_bucket{le="+Inf"}'
    under_50ms = 'research_event_loop_lag_seconds_bucket{le="0.05"}'

    def over_50ms(samples: dict[str, float]) -> float:
        return samples[every] - samples[under_50ms]

    before = await scrape(service, client)
    time.sleep(0.08)  # noqa: ASYNC251 - the stall itself, not a wait
    # The stall shows as a sample above 50 ms (the sampler's timer fired late): the timeout
    # fails the test if none comes. Not "exactly one": on a loaded machine the scrapes' own
    # turns may be counted as stalls too.
    async with asyncio.timeout(5):
        while over_50ms(after := await scrape(service, client)) == over_50ms(before):
            pass  # each scrape gives the loop a turn; the sampler fires within 10 ms
    assert after["research_event_loop_lag_max_seconds"] >= 0.07


async def test_the_worst_stall_counts_from_when_serving_begins(
    service: Service, client: httpx.AsyncClient
) -> None:
    """`serve` forgets start-up's stalls (the heap freeze) once it begins serving: a stall
    under way then stays in the histogram but not in the worst-stall gauge."""
    every = 'research_event_loop_lag_seconds_bucket{le="+Inf"}'
    under_50ms = 'research_event_loop_lag_seconds_bucket{le="0.05"}'

    def over_50ms(samples: dict[str, float]) -> float:
        return samples[every] - samples[under_50ms]

    async def next_long_sample(before: dict[str, float]) -> dict[str, float]:
        async with asyncio.timeout(5):
            while over_50ms(after := await scrape(service, client)) == over_50ms(before):
                pass  # each scrape gives the loop a turn; the sampler fires within 10 ms
        return after

    before = await scrape(service, client)
    time.sleep(0.08)  # noqa: ASYNC251 - start-up's stall, before the sampler sees it
    forget_startup_stalls(service.app)
    after = await next_long_sample(before)  # counted in the histogram (or the timeout fails)
    # Counted, it would be at least 70 ms (80 ms less the 10 ms the sample meant to sleep).
    assert after["research_event_loop_lag_max_seconds"] < 0.06

    time.sleep(0.08)  # noqa: ASYNC251 - a stall while serving
    serving = await next_long_sample(after)
    assert serving["research_event_loop_lag_max_seconds"] >= 0.07


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


@contextlib.asynccontextmanager
async def serving(settings: Settings, **providers: Any) -> AsyncIterator[Service]:
    """An app on `settings`, its own providers unless handed in, on a loopback port."""
    llm, search = providers.get("llm", ScriptedLLM()), providers.get("search", ScriptedSearch())
    app = create_app(settings, **providers)
    server = ServiceTestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield Service(server, app, llm, search)
    finally:
        await server.close()


async def research(
    service: Service, client: httpx.AsyncClient, question: str, **options: Any
) -> Received:
    """One run, listened to until its `done`."""
    run_id = await service.create(client, question, **options)
    got = await listen(client, service.url(f"/v1/runs/{run_id}/events"), timeout=30)
    assert got.last[0] == "done"
    return got


async def test_the_builtin_providers_calls_are_counted_by_stage(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    settings = Settings(data_dir=tmp_path, store="memory", corpus=CORPUS, token_delay_ms=0)
    async with serving(settings) as service:
        got = await research(service, client, "How does photosynthesis work?", depth=2)
        after = await scrape(service, client)
    assert got.last[1]["status"] == "completed"
    phases = [json.loads(e.data) for e in got.events if e.event == "phase"]
    searched = [p["query"] for p in phases if p["status"] == "progress" and "query" in p]

    def of(name: str, provider: str, stage: str) -> float:
        return after[f'{name}{{provider="{provider}",stage="{stage}"}}']

    assert of("research_provider_calls_total", "builtin", "plan") == 1
    assert of("research_provider_calls_total", "builtin", "follow_up") == 1
    assert of("research_provider_calls_total", "builtin", "synthesize") == 1
    assert of("research_provider_calls_total", "local", "search") == len(searched) > 0
    for provider, stage in [
        ("builtin", "plan"),
        ("builtin", "follow_up"),
        ("builtin", "synthesize"),
        ("local", "search"),
    ]:
        assert of("research_provider_retries_total", provider, stage) == 0
        assert of("research_provider_errors_total", provider, stage) == 0
        calls = of("research_provider_calls_total", provider, stage)
        assert of("research_provider_call_seconds_count", provider, stage) == calls
    # Only the streamed answer is timed to its first token.
    assert of("research_provider_first_token_seconds_count", "builtin", "synthesize") == 1
    assert (
        'research_provider_first_token_seconds_count{provider="builtin",stage="plan"}' not in after
    )


async def test_a_models_retries_and_errors_are_counted_against_a_failing_server(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with FakeOpenAI(models=("planner-m", "writer-m")) as fake:
        # The plan: a 429 first, then the plan; the answer: a 400, which is not retried.
        fake.script.fail(rate_limited(retry_after=0.01), when=wants_json)
        fake.script.add(Reply.json({"queries": ["alpha", "beta"]}, when=wants_json))
        fake.script.fail(HTTPError(status=400, message="model does not exist"))
        settings = openai_settings(fake, tmp_path, store="memory")
        async with serving(settings, search=ScriptedSearch()) as service:
            got = await research(service, client, "What is up?")
            after = await scrape(service, client)
    assert got.last[1]["error"]["code"] == "llm_bad_request"
    plan, answer = 'provider="openai",stage="plan"', 'provider="openai",stage="synthesize"'
    assert after[f"research_provider_calls_total{{{plan}}}"] == 1
    assert after[f"research_provider_retries_total{{{plan}}}"] == 1
    assert after[f"research_provider_errors_total{{{plan}}}"] == 0
    assert after[f"research_provider_calls_total{{{answer}}}"] == 1
    assert after[f"research_provider_retries_total{{{answer}}}"] == 0
    assert after[f"research_provider_errors_total{{{answer}}}"] == 1
    assert after[f"research_provider_call_seconds_count{{{answer}}}"] == 1
    assert after[f"research_provider_first_token_seconds_count{{{answer}}}"] == 0
    assert after['research_runs_finished_total{code="llm_bad_request",status="failed"}'] == 1


async def test_a_search_providers_retries_and_errors_are_counted(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    async with FakeSearxng() as searx:
        for query in ("alpha", "beta"):
            searx.script(query, [Result(url=f"https://{query}.example/", title=query)])
        settings = Settings(
            data_dir=tmp_path,
            store="memory",
            search="searxng",
            searxng_url=searx.url,
            pages_per_run=0,
        )
        async with serving(settings, llm=ScriptedLLM()) as service:
            # Of the two searches, one gets a 503 (retried at once), one a 400 (not retried).
            searx.fail(Status(status=503, retry_after="0"), Status(status=400))
            got = await research(service, client, "What is up?")
            after = await scrape(service, client)
    assert got.last[1]["status"] == "completed"
    search = 'provider="searxng",stage="search"'
    assert after[f"research_provider_calls_total{{{search}}}"] == 2
    assert after[f"research_provider_retries_total{{{search}}}"] == 1
    assert after[f"research_provider_errors_total{{{search}}}"] == 1
    assert after[f"research_provider_call_seconds_count{{{search}}}"] == 2


async def test_the_delivery_lag_is_timed_for_live_events_only(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.hold_after = 1
    run_id = await service.create(client)
    await service.until_held()
    url = service.url(f"/v1/runs/{run_id}/events")
    caught_up, live = 0, 0
    async with aconnect_sse(client, "GET", url) as source:
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            if not service.llm.release.is_set():
                caught_up += 1
                if sse.event == "token":  # everything appended before the listener came
                    service.llm.release.set()
            else:
                live += 1
    assert sse.event == "done"
    assert live > 0
    # A listener after the end reads only the log: catch-up, no lag.
    late = await listen(client, url, timeout=10)
    after = await scrape(service, client)
    assert after["research_events_delivered_total"] == (caught_up + live) * 2 == len(late.ids) * 2
    assert after["research_event_delivery_lag_seconds_count"] == live
    assert after['research_event_delivery_lag_seconds_bucket{le="+Inf"}'] == live
    assert 0 <= after["research_event_delivery_lag_seconds_sum"] < live * 1.0


async def test_a_client_that_goes_away_mid_run_is_counted_as_dropped(
    service: Service, client: httpx.AsyncClient
) -> None:
    service.llm.hold_after = 1
    run_id = await service.create(client)
    async with aconnect_sse(client, "GET", service.url(f"/v1/runs/{run_id}/events")) as source:
        async for sse in source.aiter_sse():
            if sse.event == "token":
                break
        # Once this listener has gone, nobody listens: the run is abandoned at once, after
        # the stream has counted its listener as dropped.
        service.manager.listening.abandon_after_s = 0
    await service.wait_done(run_id)
    after = await scrape(service, client)
    assert after["research_listeners_dropped_total"] == 1
    assert after["research_listeners_cut_total"] == 0
    assert after['research_runs_finished_total{code="abandoned",status="cancelled"}'] == 1
    # A listener that stays to the done is not dropped.
    await listen(client, service.url(f"/v1/runs/{run_id}/events"), timeout=10)
    assert (await scrape(service, client))["research_listeners_dropped_total"] == 1


async def test_the_metrics_token_reads_the_metrics_and_opens_nothing_else(
    tmp_path: Path,
    make_service: MakeService,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    keys = SqliteKeys(tmp_path / "data" / RUN_STORE_FILE)
    try:
        _, alice = keys.create("alice", admin=False)
        service = await make_service(
            store="sqlite", auth="keys", secret=SECRET, metrics_token=METRICS_TOKEN
        )
        samples = await scrape(service, client, Authorization=f"Bearer {METRICS_TOKEN}")
        assert samples["research_runs_created_total"] == 0
        for wrong in (
            f"Bearer {METRICS_TOKEN[:-1]}",
            f"Bearer {METRICS_TOKEN}x",
            f"Basic {METRICS_TOKEN}",
        ):
            refused = await client.get(service.url("/metrics"), headers={"Authorization": wrong})
            assert refused.status_code == 401, wrong
        # It is no API key: the API refuses it, and it makes no key an admin.
        runs = await client.get(
            service.url("/v1/runs"), headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        assert runs.status_code == 401
        user = await client.get(
            service.url("/metrics"), headers={"Authorization": f"Bearer {alice}"}
        )
        assert user.status_code == 403
    finally:
        keys.close()
    assert METRICS_TOKEN not in caplog.text
    assert "/metrics" in caplog.text  # the requests were logged, without the token


async def test_with_auth_off_the_metrics_stay_open_whatever_the_token(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    service = await make_service(metrics_token=METRICS_TOKEN)
    assert (await scrape(service, client))["research_runs_created_total"] == 0


async def test_a_scrape_reads_the_frozen_count_taken_when_start_up_froze(
    make_service: MakeService, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gc.get_freeze_count()` walks every frozen object (4-10 ms for start-up's 100,000, on
    the event loop): the count is taken once, when they are frozen, and each scrape reads it."""
    service = await make_service()
    freeze_startup_objects()
    try:
        counted = gc.get_freeze_count()

        def walk() -> int:
            raise AssertionError("a scrape walked the frozen heap")

        monkeypatch.setattr(gc, "get_freeze_count", walk)
        scraped = await scrape(service, client)
    finally:
        gc.unfreeze()
    assert scraped["research_gc_frozen_objects"] == counted > 0


async def test_a_single_process_reports_no_queue(
    service: Service, client: httpx.AsyncClient
) -> None:
    response = await client.get(service.url("/metrics"))
    (family,) = [
        f for f in text_string_to_metric_families(response.text) if f.name == "research_queued_runs"
    ]
    assert family.type == "gauge"
    assert family.samples == []


async def test_a_cluster_node_reports_the_runs_waiting_in_the_queue(
    postgres_url: str, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    redis = await redis_or_skip()
    prefix = f"test-{secrets.token_hex(4)}:"
    queue = f"{prefix}queue"
    unread = 'research_queued_runs{state="unread"}'
    unacknowledged = 'research_queued_runs{state="unacknowledged"}'
    node: Service | None = None
    try:
        # An API node and no executor: what is created waits.
        node = await make_service(
            store="postgres",
            database_url=postgres_url,
            redis_url=REDIS_URL,
            redis_prefix=prefix,
            execute=False,
        )
        assert (await scrape(node, client))[unread] == 0
        await node.create(client)
        await node.create(client, "And another?")
        queued = await scrape(node, client)
        assert (queued[unread], queued[unacknowledged]) == (2, 0)
        # An executor reads one entry: it waits, unacknowledged, until the run is taken.
        await redis.xgroup_create(queue, GROUP, id="0")
        await redis.xreadgroup(GROUP, "test-executor", {queue: ">"}, count=1)
        read = await scrape(node, client)
        assert (read[unread], read[unacknowledged]) == (1, 1)
    finally:
        if node is not None:
            await node.server.close()  # before its keys go, so it writes none afterwards
        await delete_prefix(redis, prefix)
        await redis.aclose()


async def test_a_backed_up_listener_catches_up_from_the_log_and_its_lag_is_counted(
    make_service: MakeService, client: httpx.AsyncClient
) -> None:
    """Live events the hub could not hand over (a full socket) count when the log sends them."""
    service = await make_service(max_tokens_per_run=10_000_000)
    # 4 MiB, far more than the socket holds, in the largest pieces a token event carries.
    service.llm.pieces = ["x" * MAX_PIECE_CHARS] * 1024
    service.llm.hold_after = 1
    run_id = await service.create(client)
    await service.until_held()
    # A small receive buffer, so the server's side fills up soon.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", service.server.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        writer.write(f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        received = await reader.readuntil(b"event: token\n")
        caught_up = received.count(b"\nevent: ")
        service.llm.release.set()
        # The run ends while this listener reads nothing: the hub lets it go, the rest waits
        # in the log.
        await service.wait_done(run_id)
        rest = bytearray()
        while not rest.endswith(b"\r\n0\r\n\r\n"):  # the last chunk: the body's end
            chunk = await reader.read(1 << 16)
            assert chunk, "the stream ended early"
            rest += chunk
        live = (received + rest).count(b"\nevent: ") - caught_up
    finally:
        writer.close()
    assert live == len(service.llm.pieces) - 1 + 2  # the rest of the tokens, completed, done
    after = await scrape(service, client)
    assert after["research_event_delivery_lag_seconds_count"] == live
