"""The scale bench's figures from what each step collected, and their tables (the targets' are
in scale_targets.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from report import markdown_table
from scale_client import (
    DELIVERY_HISTOGRAM,
    LAG_GAUGE,
    LAG_HISTOGRAM,
    Posted,
    Received,
    Recording,
    Scrape,
    histogram_delta,
)
from scale_targets import BASELINE, SERVICE, figure, render_targets


@dataclass(frozen=True, slots=True)
class StepData:
    """What one server's window collected for one N."""

    server: str
    runs: int
    posted: list[Posted]
    streams: list[list[Received]]
    heads: list[float]  # when each listener's response began (monotonic s)
    recordings: list[Recording | None]  # None: the run had not ended when asked
    wall_s: float
    cpu_s: float
    cpu_ticks_s: float  # the same from /proc/PID/stat, a cross-check
    rss_kib: int
    peak_rss_kib: int
    wall_offset: float  # time.time() - time.monotonic()
    client_stall_s: float
    client_cpu_s: float
    #: Cores the machine's other processes kept busy (not this step's server or client).
    other_cores: float
    scrapes: tuple[Scrape, Scrape] | None
    #: The scrapes once every listener was attached, and after the window.
    executing: tuple[Scrape, Scrape] | None = None
    all_open_s: float = math.nan  # from the first POST to the last stream's first bytes


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank on the sorted values); NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def bucket_pct(deltas: list[tuple[float, float]], p: float) -> float:
    """The upper bound of the bucket that holds a histogram's p-th percentile."""
    total = sum(count for _, count in deltas)
    running = 0.0
    for bound, count in deltas:
        running += count
        if total and running >= p / 100 * total:
            return bound
    return math.nan


def loop_stall(scrapes: tuple[Scrape, Scrape] | None) -> dict[str, Any]:
    """The service's longest loop stall in the window, from its metrics, and how it was read.

    The gauge keeps the worst stall so far (since the process started, or since a reset): when
    it rose during the window, its new value is the window's worst, exactly. Otherwise the
    histogram's observations between the two scrapes give the bucket the worst one fell in.
    """
    if scrapes is None:
        return {"stall_ms": math.nan, "stall_source": "none"}
    before, after = scrapes
    gauge_before = before.gauges.get(LAG_GAUGE, math.nan) * 1000
    gauge_after = after.gauges.get(LAG_GAUGE, math.nan) * 1000
    if gauge_after > gauge_before or (math.isnan(gauge_before) and gauge_after >= 0):
        return {"stall_ms": gauge_after, "stall_source": LAG_GAUGE}
    deltas = histogram_delta(before, after, LAG_HISTOGRAM)
    if deltas is None:
        return {"stall_ms": math.nan, "stall_source": "none"}
    return {
        **{f"stall_{key}": value for key, value in highest_bucket(deltas).items()},
        "stall_source": f"{LAG_HISTOGRAM} (highest non-empty bucket)",
        # The gauge did not rise: the window's worst is at most the worst before it.
        "stall_gauge_ms": gauge_after,
    }


def executing_stall(executing: tuple[Scrape, Scrape] | None) -> dict[str, Any]:
    """The longest loop stall once every listener was attached, when no run arrives any more.

    From the loop-lag histogram's observations between a scrape at that moment and one after
    the window (the gauge keeps the worst since the start, the arrivals' included). A stall
    under way at that moment counts on whichever side its sample landed.
    """
    deltas = None if executing is None else histogram_delta(*executing, LAG_HISTOGRAM)
    if deltas is None:
        return {"executing_stall_ms": math.nan}
    return {f"executing_stall_{key}": value for key, value in highest_bucket(deltas).items()}


def highest_bucket(deltas: list[tuple[float, float]]) -> dict[str, Any]:
    """The highest bucket a histogram's observations filled, (floor, ms], and how many there were.

    Above the last finite bound, `ms` is that bound and `above_last_bucket` is set.
    """
    bounds = [bound for bound, _ in deltas]
    seen = [index for index, (_, count) in enumerate(deltas) if count > 0]
    top = max(seen, default=-1)
    return {
        "ms": (bounds[min(top, len(bounds) - 2)] if top >= 0 else 0.0) * 1000,
        "floor_ms": (bounds[top - 1] if top > 0 else 0.0) * 1000,
        "above_last_bucket": top == len(bounds) - 1,
        "samples": sum(count for _, count in deltas),
    }


def delivery(step: StepData) -> dict[str, Any]:
    """Each live event's receive time against its `t_ms` on the run's own clock.

    A run's clock starts when its pipeline starts, which the client cannot see. Every event is
    received after it was emitted, so the start is at most min(receive - t_ms) over the run's
    events: the bench takes that (the run's best-delivered event has lag 0), which understates
    every lag of the run by that event's own lag, and t_ms's whole milliseconds add up to 1 ms.
    The start is also after `created_at`; lags anchored there are upper bounds (`*_upper_*`),
    high by the run's start delay. Events emitted before the listener's response began (the
    catch-up of a listener that attached late) are counted apart.
    """
    live: list[float] = []
    by_name: dict[str, list[float]] = {}
    upper: list[float] = []
    start_delay: list[float] = []
    catch_up = 0
    runs = zip(step.posted, step.heads, step.streams, step.recordings, strict=True)
    for posted, head, stream, recording in runs:
        if recording is None:
            continue
        # receive - t_ms: when the run started, were the event delivered at once (monotonic s).
        starts = [(event, event.at - recording.t_ms[event.seq] / 1000) for event in stream]
        if not starts:
            continue
        origin = min(start for _, start in starts)
        created = posted.created_at - step.wall_offset
        start_delay.append((origin - created) * 1000)
        for event, start in starts:
            if event.first_read or origin + recording.t_ms[event.seq] / 1000 <= head:
                catch_up += 1
                continue
            live.append((start - origin) * 1000)
            by_name.setdefault(event.name, []).append(live[-1])
            upper.append((start - created) * 1000)
    return {
        "lag_p50_ms": pct(live, 50),
        "lag_p99_ms": pct(live, 99),
        "lag_max_ms": max(live, default=math.nan),
        "lag_events": len(live),
        "catch_up_events": catch_up,
        "lag_upper_p50_ms": pct(upper, 50),
        "lag_upper_p99_ms": pct(upper, 99),
        "lag_upper_max_ms": max(upper, default=math.nan),
        "start_delay_p50_ms": pct(start_delay, 50),
        "start_delay_max_ms": max(start_delay, default=math.nan),
        "lag_by_event": {
            name: {
                "count": len(lags),
                "p50_ms": pct(lags, 50),
                "p99_ms": pct(lags, 99),
                "max_ms": max(lags),
            }
            for name, lags in sorted(by_name.items())
        },
    }


def step_figures(step: StepData) -> dict[str, Any]:
    """One server's figures for one N."""
    post_ms = [(p.answered - p.sent) * 1000 for p in step.posted]
    ended = [r for r in step.recordings if r is not None]
    searching = [float(r.timings_ms.get("searching", 0)) for r in ended]
    synthesizing = [float(r.timings_ms.get("synthesizing", 0)) for r in ended]
    queries = [query for r in ended for query in r.queries]
    events = sum(len(stream) for stream in step.streams)
    done = [next((e.status for e in s if e.name == "done"), None) for s in step.streams]
    found: dict[str, Any] = {
        "runs": step.runs,
        "searching_p50_ms": pct(searching, 50),
        "searching_max_ms": max(searching, default=math.nan),
        "synthesizing_p50_ms": pct(synthesizing, 50),
        "queries": len(queries),
        "distinct_queries": len(set(queries)),
        "post_p50_ms": pct(post_ms, 50),
        "post_p99_ms": pct(post_ms, 99),
        "post_max_ms": max(post_ms),
        **delivery(step),
        **loop_stall(step.scrapes),
        **executing_stall(step.executing),
        "all_open_ms": step.all_open_s * 1000,
        "cpu_us_per_event": step.cpu_s / events * 1e6 if events else math.nan,
        "cpu_s": step.cpu_s,
        "cpu_ticks_s": step.cpu_ticks_s,
        "events_delivered": events,
        "wall_s": step.wall_s,
        "rss_mib": step.rss_kib / 1024,
        "peak_rss_mib": step.peak_rss_kib / 1024,
        "completed": sum(status == "completed" for status in done),
        "done_statuses": {str(s): done.count(s) for s in set(done)},
        "client_stall_ms": step.client_stall_s * 1000,
        "client_cpu_us_per_event": step.client_cpu_s / events * 1e6 if events else math.nan,
        "other_cores": step.other_cores,
    }
    if step.scrapes is not None:
        deltas = histogram_delta(*step.scrapes, DELIVERY_HISTOGRAM)
        if deltas is not None:
            found["service_delivery_lag_buckets"] = [[b, c] for b, c in deltas if c]
            found["service_lag_p99_ms"] = bucket_pct(deltas, 99) * 1000
    return found


def figures(steps: list[StepData]) -> dict[str, Any]:
    """Every step's figures, keyed by N then server."""
    results: dict[str, Any] = {}
    for step in steps:
        results.setdefault(str(step.runs), {})[step.server] = step_figures(step)
    return results


def _stall(f: dict[str, Any], key: str = "stall") -> str:
    """A stall as read: the gauge's value, or the histogram bucket's range and its samples."""
    if f.get(f"{key}_source") == LAG_GAUGE:
        return figure(f[f"{key}_ms"], ".1f")
    if f.get(f"{key}_source") == "none" or math.isnan(f[f"{key}_ms"]):
        return "n/a"
    if not f[f"{key}_samples"]:
        return "no sample"
    # The histogram gives a bucket: its range, and how many samples fell in the window.
    if f.get(f"{key}_above_last_bucket"):
        shown = f"> {f[f'{key}_ms']:g}"
    else:
        shown = f"{f[f'{key}_floor_ms']:g}-{f[f'{key}_ms']:g}"
    return f"{shown} ({f[f'{key}_samples']:.0f} samples)"


def _slashed(f: dict[str, Any], *keys: str, fmt: str = ".1f") -> str:
    """Several of one server's figures, `a / b / c`."""
    return " / ".join(figure(f[key], fmt) for key in keys)


def render(results: dict[str, Any], *, steps: tuple[int, ...], spread_s: float = 0.0) -> str:
    """The per-N table, the conditions of each window, then the targets with verdicts."""
    main: list[tuple[str, ...]] = [
        (
            "runs",
            "server",
            "searching p50 / max ms",
            "synthesizing p50 ms",
            "POST p50 / p99 / max ms",
            "delivery lag p50 / p99 / max ms",
            "loop stall ms",
            "CPU µs / event",
            "RSS MiB (peak)",
            "completed",
        )
    ]
    conditions: list[tuple[str, ...]] = [
        (
            "runs",
            "server",
            "window s",
            "events delivered (catch-up)",
            "run start after created_at p50 / max ms",
            "lag from created_at p99 / max ms",
            "service-side lag p99 ms",
            "every stream open after ms",
            "loop stall from then ms",
            "client loop stall ms",
            "client CPU µs / event",
            "other processes, cores",
        )
    ]
    for runs in steps:
        for server in (SERVICE, BASELINE):
            f = results[str(runs)][server]
            ours = server == SERVICE
            main.append(
                (
                    str(runs),
                    server,
                    _slashed(f, "searching_p50_ms", "searching_max_ms", fmt=",.0f")
                    if ours
                    else "-",
                    figure(f["synthesizing_p50_ms"]) if ours else "-",
                    _slashed(f, "post_p50_ms", "post_p99_ms", "post_max_ms"),
                    _slashed(f, "lag_p50_ms", "lag_p99_ms", "lag_max_ms"),
                    _stall(f) if ours else "-",
                    figure(f["cpu_us_per_event"], ".1f"),
                    f"{f['rss_mib']:.0f} ({f['peak_rss_mib']:.0f})",
                    f"{f['completed']} of {f['runs']}",
                )
            )
            side = f.get("service_lag_p99_ms", math.nan)
            conditions.append(
                (
                    str(runs),
                    server,
                    f"{f['wall_s']:.1f}",
                    f"{f['events_delivered']:,} ({f['catch_up_events']:,})",
                    _slashed(f, "start_delay_p50_ms", "start_delay_max_ms"),
                    _slashed(f, "lag_upper_p99_ms", "lag_upper_max_ms"),
                    f"<= {figure(side, '.1f')}" if ours else "-",
                    figure(f["all_open_ms"], ".0f"),
                    _stall(f, "executing_stall"),
                    figure(f["client_stall_ms"], ".1f"),
                    figure(f["client_cpu_us_per_event"], ".1f"),
                    f"{f['other_cores']:.2f}",
                )
            )
    return "\n\n".join(
        [
            markdown_table(main),
            "Delivery lag by event (ms)",
            render_by_event(results, steps=steps),
            "Conditions of each window",
            markdown_table(conditions),
            render_targets(results, steps=steps, spread_s=spread_s),
        ]
    )


def render_by_event(results: dict[str, Any], *, steps: tuple[int, ...]) -> str:
    """Delivery lag per event name: tokens, phases and `done` fare differently."""
    rows: list[tuple[str, ...]] = [
        ("runs", "server", "token p50 / p99 / max", "phase p50 / p99 / max", "done p50 / p99 / max")
    ]
    for runs in steps:
        for server in (SERVICE, BASELINE):
            by_event = results[str(runs)][server]["lag_by_event"]
            cells = []
            for name in ("token", "phase", "done"):
                lag = by_event.get(name)
                cells.append(
                    "-"
                    if lag is None
                    else f"{figure(lag['p50_ms'], '.1f')} / {figure(lag['p99_ms'], '.1f')} / "
                    f"{figure(lag['max_ms'], '.1f')}"
                )
            rows.append((str(runs), server, *cells))
    return markdown_table(rows)
