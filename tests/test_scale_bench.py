"""bench/scale_bench.py reads the service's loop stall from either form of its metrics (its
`--quick` run is in tests/test_benches.py, beside the other benches')."""

from __future__ import annotations

import asyncio
import importlib
import math
import time
from pathlib import Path
from types import ModuleType

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

BENCH = Path(__file__).resolve().parent.parent / "bench"


def bench_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import one of bench/'s modules (they import each other by their bare names)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module(name)


def scrape_text(*lines: str) -> str:
    return "\n".join(lines) + "\n"


HISTOGRAM_BEFORE = scrape_text(
    "# TYPE research_event_loop_lag_seconds histogram",
    'research_event_loop_lag_seconds_bucket{le="0.001"} 5.0',
    'research_event_loop_lag_seconds_bucket{le="0.025"} 6.0',
    'research_event_loop_lag_seconds_bucket{le="0.1"} 6.0',
    'research_event_loop_lag_seconds_bucket{le="+Inf"} 6.0',
    "research_event_loop_lag_seconds_count 6.0",
    "research_event_loop_lag_seconds_sum 0.02",
)
HISTOGRAM_AFTER = scrape_text(
    "# TYPE research_event_loop_lag_seconds histogram",
    'research_event_loop_lag_seconds_bucket{le="0.001"} 7.0',
    'research_event_loop_lag_seconds_bucket{le="0.025"} 8.0',
    'research_event_loop_lag_seconds_bucket{le="0.1"} 9.0',
    'research_event_loop_lag_seconds_bucket{le="+Inf"} 9.0',
    "research_event_loop_lag_seconds_count 9.0",
    "research_event_loop_lag_seconds_sum 0.09",
)


def test_loop_stall_is_the_highest_bucket_filled_in_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = bench_module("scale_report", monkeypatch)
    client = bench_module("scale_client", monkeypatch)
    before = client.parse_scrape(HISTOGRAM_BEFORE)
    after = client.parse_scrape(HISTOGRAM_AFTER)
    stall = report.loop_stall((before, after))
    assert stall["stall_ms"] == pytest.approx(100.0)
    assert stall["stall_samples"] == 3
    assert not stall["stall_above_last_bucket"]


def gauge(seconds: float) -> str:
    return scrape_text(
        "# TYPE research_event_loop_lag_max_seconds gauge",
        f"research_event_loop_lag_max_seconds {seconds}",
    )


def test_loop_stall_is_the_gauge_when_it_rose_in_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = bench_module("scale_report", monkeypatch)
    client = bench_module("scale_client", monkeypatch)
    before = client.parse_scrape(HISTOGRAM_BEFORE + gauge(0.0125))
    after = client.parse_scrape(HISTOGRAM_AFTER + gauge(0.0375))
    stall = report.loop_stall((before, after))
    assert stall["stall_ms"] == pytest.approx(37.5)
    assert stall["stall_source"] == "research_event_loop_lag_max_seconds"


def test_loop_stall_is_the_bucket_when_the_gauge_kept_an_older_worst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = bench_module("scale_report", monkeypatch)
    client = bench_module("scale_client", monkeypatch)
    before = client.parse_scrape(HISTOGRAM_BEFORE + gauge(0.5))
    after = client.parse_scrape(HISTOGRAM_AFTER + gauge(0.5))
    stall = report.loop_stall((before, after))
    assert (stall["stall_floor_ms"], stall["stall_ms"]) == pytest.approx((25.0, 100.0))
    assert stall["stall_source"].startswith("research_event_loop_lag_seconds")


def test_a_recordings_queries_are_its_searching_progress_events(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = bench_module("scale_client", monkeypatch)
    events = [
        {"event": "phase", "data": {"phase": "planning", "status": "completed"}},
        {"event": "phase", "data": {"phase": "searching", "status": "started"}},
        {"event": "phase", "data": {"phase": "searching", "status": "progress", "query": "a b"}},
        {"event": "phase", "data": {"phase": "searching", "status": "progress", "query": "c"}},
        # A follow-up round is announced with its queries: not a search of its own.
        {"event": "phase", "data": {"phase": "searching", "status": "progress", "queries": ["d"]}},
        {"event": "token", "data": {"text": "query"}},
        {"event": "done", "data": {"status": "completed"}},
    ]
    assert client.searched(events) == ("a b", "c")


def test_the_searching_ratio_tends_to_the_ratio_of_distinct_queries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = bench_module("scale_targets", monkeypatch)
    assert report.queue_bound({"distinct_queries": 444}, {"distinct_queries": 30}) == pytest.approx(
        14.8
    )
    assert math.isnan(report.queue_bound({"distinct_queries": 444}, {"distinct_queries": 0}))
    assert math.isnan(report.queue_bound({}, {"distinct_queries": 30}))


class _Poster:
    """Stands in for scale_client.Poster: notes when each body was sent."""

    def __init__(self, sent: list[tuple[float, str]]) -> None:
        self.sent = sent
        self.on_answer: object = None
        self.answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def send(self, body: dict[str, object]) -> None:
        self.sent.append((time.monotonic(), str(body["question"])))
        self.answer.set_result("posted")


class _Recorder:
    def get(self, path: str) -> None:
        raise AssertionError("no POST is answered here")


async def test_spread_sends_the_posts_evenly_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = bench_module("scale_bench", monkeypatch)
    sent: list[tuple[float, str]] = []
    clients = [(_Poster(sent), _Recorder()) for _ in range(5)]
    assert await bench.burst(clients, spread_s=0.2) == ["posted"] * 5
    workload = bench_module("scale_workload", monkeypatch)
    assert [question for _, question in sent] == [
        workload.run_body(n)["question"] for n in range(5)
    ]
    # The n-th goes no sooner than n/5 of the spread after the first.
    times = [at for at, _ in sent]
    for number, at in enumerate(times):
        assert at - times[0] >= number * 0.2 / 5 - 0.002

    sent.clear()
    clients = [(_Poster(sent), _Recorder()) for _ in range(5)]
    burst = asyncio.ensure_future(bench.burst(clients))
    await asyncio.sleep(0)  # one loop turn: all at once means every POST went out in it
    assert len(sent) == 5
    assert await burst == ["posted"] * 5


def test_the_stall_once_every_stream_is_open_is_read_from_the_histogram_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = bench_module("scale_report", monkeypatch)
    client = bench_module("scale_client", monkeypatch)
    # The gauge rose meanwhile, but it keeps the worst since the start: only the histogram's
    # observations after the streams opened count.
    opened = client.parse_scrape(HISTOGRAM_BEFORE + gauge(0.2))
    after = client.parse_scrape(HISTOGRAM_AFTER + gauge(0.3))
    stall = report.executing_stall((opened, after))
    assert (stall["executing_stall_floor_ms"], stall["executing_stall_ms"]) == pytest.approx(
        (25.0, 100.0)
    )
    assert stall["executing_stall_samples"] == 3
    assert math.isnan(report.executing_stall(None)["executing_stall_ms"])


async def test_the_bare_server_reports_its_loop_lag_as_the_service_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    baseline = bench_module("scale_baseline", monkeypatch)
    client = bench_module("scale_client", monkeypatch)
    app = web.Application()
    baseline.add_lag_probe(app)
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        base = f"http://{server.host}:{server.port}"
        first = await client.scrape(session, base)
        time.sleep(0.035)  # noqa: ASYNC251 - the stall under test: the loop held for 35 ms
        async with asyncio.timeout(5):
            while True:  # the probe notes the stall once the loop runs it again
                after = await client.scrape(session, base)
                deltas = client.histogram_delta(first, after, client.LAG_HISTOGRAM)
                if sum(count for bound, count in deltas if bound > 0.02):
                    break
    # The gauge kept the stall (35 ms, less up to one 10 ms period the probe was asleep),
    # and the highest bucket filled is the one that holds it.
    worst_ms = after.gauges[client.LAG_GAUGE] * 1000
    assert worst_ms >= 25
    top = bench_module("scale_report", monkeypatch).highest_bucket(deltas)
    assert top["floor_ms"] < worst_ms <= top["ms"]


async def test_a_recorder_is_open_at_the_first_bytes_or_at_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = bench_module("scale_client", monkeypatch)
    answers = [b"HTTP/1.1 200 OK\r\n", b""]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answers.pop(0))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, client.HOST, 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for opened_by in ("bytes", "close"):
            (recorder,) = await client.connect_recorders(port, 1)
            assert not recorder.opened.done()
            recorder.get("/v1/runs/x/events")
            async with asyncio.timeout(5):
                await recorder.opened
                await recorder.closed
            assert bool(recorder.reads) == (opened_by == "bytes")
