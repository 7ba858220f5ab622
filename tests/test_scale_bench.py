"""bench/scale_bench.py works: a `--quick` run prints its tables, and the loop stall is read from
either form of the service's metrics. A smoke run, not a timed test: no figure is checked."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
#: The quick run takes about 30 s (the stdlib docs are indexed once, then 5 and 20 runs).
QUICK_TIMEOUT_S = 110


def bench_module(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Import one of bench/'s modules (they import each other by their bare names)."""
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module(name)


def test_quick_run_prints_its_tables_and_every_run_completes(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / "scale_bench.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT_S,
        cwd=BENCH.parent,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| runs |" in done.stdout
    assert "delivery lag p50 / p99 / max ms" in done.stdout
    assert "Targets at 20 runs" in done.stdout
    results = json.loads(out.read_text())["results"]
    assert sorted(results, key=int) == ["5", "20"]
    for runs, servers in results.items():
        assert set(servers) == {"research-service", "bare aiohttp"}
        for figures in servers.values():
            assert figures["completed"] == int(runs)
            assert figures["lag_events"] > 0


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
