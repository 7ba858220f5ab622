"""bench/scale_bench.py reads the service's loop stall from either form of its metrics (its
`--quick` run is in tests/test_benches.py, beside the other benches')."""

from __future__ import annotations

import asyncio
import importlib
import math
import time
from pathlib import Path
from types import ModuleType

import pytest

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
    report = bench_module("scale_report", monkeypatch)
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
