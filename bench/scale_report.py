"""The scale bench's figures from what each step collected, the table, and the targets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

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

SERVICE: Final = "research-service"
BASELINE: Final = "bare aiohttp"
#: Issue 16's targets at 300 runs.
TARGET_RUNS: Final = 300
SEARCH_GROWTH_MAX: Final = 2.0
POST_P99_MAX_MS: Final = 100.0
LAG_P99_MAX_MS: Final = 50.0
LAG_MAX_MAX_MS: Final = 100.0
STALL_MAX_MS: Final = 20.0


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
    bounds = [bound for bound, _ in deltas]
    seen = [index for index, (_, count) in enumerate(deltas) if count > 0]
    top = max(seen, default=-1)
    return {
        # The bucket (floor, stall]: the stall was at most its bound and more than the one
        # below (above the last finite bound: more than that).
        "stall_ms": (bounds[min(top, len(bounds) - 2)] if top >= 0 else 0.0) * 1000,
        "stall_floor_ms": (bounds[top - 1] if top > 0 else 0.0) * 1000,
        "stall_above_last_bucket": top == len(bounds) - 1,
        "stall_source": f"{LAG_HISTOGRAM} (highest non-empty bucket)",
        "stall_samples": sum(count for _, count in deltas),
        # The gauge did not rise: the window's worst is at most the worst before it.
        "stall_gauge_ms": gauge_after,
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


def _f(value: float, fmt: str = ",.0f") -> str:
    return "-" if math.isnan(value) else format(value, fmt)


def _stall(f: dict[str, Any]) -> str:
    if f["stall_source"] == LAG_GAUGE:
        return _f(f["stall_ms"], ".1f")
    if f["stall_source"] == "none":
        return "n/a"
    if not f["stall_samples"]:
        return "no sample"
    # The histogram gives a bucket: its range, and how many samples fell in the window.
    if f.get("stall_above_last_bucket"):
        shown = f"> {f['stall_ms']:g}"
    else:
        shown = f"{f['stall_floor_ms']:g}-{f['stall_ms']:g}"
    return f"{shown} ({f['stall_samples']:.0f} samples)"


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
                    f"{_f(f['searching_p50_ms'])} / {_f(f['searching_max_ms'])}" if ours else "-",
                    _f(f["synthesizing_p50_ms"]) if ours else "-",
                    f"{_f(f['post_p50_ms'], '.1f')} / {_f(f['post_p99_ms'], '.1f')} / "
                    f"{_f(f['post_max_ms'], '.1f')}",
                    f"{_f(f['lag_p50_ms'], '.1f')} / {_f(f['lag_p99_ms'], '.1f')} / "
                    f"{_f(f['lag_max_ms'], '.1f')}",
                    _stall(f) if ours else "-",
                    _f(f["cpu_us_per_event"], ".1f"),
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
                    f"{_f(f['start_delay_p50_ms'], '.1f')} / {_f(f['start_delay_max_ms'], '.1f')}",
                    f"{_f(f['lag_upper_p99_ms'], '.1f')} / {_f(f['lag_upper_max_ms'], '.1f')}",
                    f"<= {_f(side, '.1f')}" if ours else "-",
                    _f(f["client_stall_ms"], ".1f"),
                    _f(f["client_cpu_us_per_event"], ".1f"),
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
                    else f"{_f(lag['p50_ms'], '.1f')} / {_f(lag['p99_ms'], '.1f')} / "
                    f"{_f(lag['max_ms'], '.1f')}"
                )
            rows.append((str(runs), server, *cells))
    return markdown_table(rows)


def _verdict(value: float, limit: float, *, floor: float | None = None) -> str:
    """met / MISSED for `value < limit`; a histogram bucket (floor, value] may straddle it."""
    if math.isnan(value):
        return "n/a"
    if value < limit:
        return "met"
    if floor is not None and floor < limit:
        return "unclear"
    return "MISSED"


def targets(results: dict[str, Any], *, steps: tuple[int, ...]) -> dict[str, Any]:
    """Issue 16's targets at 300 runs (or the largest step, when 300 was not measured)."""
    at = TARGET_RUNS if TARGET_RUNS in steps else max(steps)
    f, base = results[str(at)][SERVICE], results[str(at)][BASELINE]
    small = results[str(min(steps))][SERVICE]
    first = small["searching_p50_ms"]
    growth = f["searching_p50_ms"] / first if first else math.nan
    above = bool(f.get("stall_above_last_bucket"))
    rows = [
        {
            "target": f"searching p50 ÷ its {min(steps)}-run figure",
            "value": growth,
            "limit": f"<= {SEARCH_GROWTH_MAX:g}",
            "queue_bound": queue_bound(f, small),
            "verdict": "met" if growth <= SEARCH_GROWTH_MAX else "MISSED",
        },
    ]
    for label, key, limit in (
        ("POST p99 ms", "post_p99_ms", POST_P99_MAX_MS),
        ("delivery lag p99 ms", "lag_p99_ms", LAG_P99_MAX_MS),
        ("delivery lag max ms", "lag_max_ms", LAG_MAX_MAX_MS),
    ):
        rows.append(
            {
                "target": label,
                "value": f[key],
                "limit": f"< {limit:g}",
                "bare_aiohttp": base[key],
                "verdict": _verdict(f[key], limit),
            }
        )
    rows.append(
        {
            "target": "longest loop stall ms"
            + ("" if f["stall_source"] == LAG_GAUGE else " (a histogram bucket)"),
            "value": f["stall_ms"],
            # From the histogram: the stall's bucket, (floor, value]; above the last: > value.
            "floor": f.get("stall_floor_ms"),
            "above": above,
            "limit": f"< {STALL_MAX_MS:g}",
            "bare_aiohttp": base.get("stall_ms", math.nan),
            "verdict": _verdict(
                math.inf if above else f["stall_ms"], STALL_MAX_MS, floor=f.get("stall_floor_ms")
            ),
        }
    )
    rows.append(
        {
            "target": "runs completed",
            "value": f["completed"],
            "limit": f"all {f['runs']}",
            "bare_aiohttp": base["completed"],
            "verdict": "met" if f["completed"] == f["runs"] else "MISSED",
        }
    )
    return {"runs": at, "rows": rows}


def queue_bound(large: dict[str, Any], small: dict[str, Any]) -> float:
    """What the searching ratio tends to when every run's queries queue at once on one core.

    All of a step's runs post at once, so their searches queue together on the one search
    thread: the median run's search phase ends after about half of its step's distinct
    queries (a query many runs share is searched once). The ratio of two steps' median
    search phases then approaches the ratio of their distinct queries, whatever one query
    costs: a cheaper search shortens both alike.
    """
    if not small.get("distinct_queries") or not large.get("distinct_queries"):
        return math.nan
    return float(large["distinct_queries"]) / float(small["distinct_queries"])


def render_targets(
    results: dict[str, Any], *, steps: tuple[int, ...], spread_s: float = 0.0
) -> str:
    """The targets as a table, with research-service's value and bare aiohttp's beside it."""
    found = targets(results, steps=steps)
    rows: list[tuple[str, ...]] = [("target", "value", "limit", "bare aiohttp", "verdict")]
    for row in found["rows"]:
        fmt = ".2f" if row["target"].startswith("searching") else ".1f"
        if row["target"] == "runs completed":
            fmt = ".0f"
        value = _f(row["value"], fmt)
        if row["target"] == "runs completed":
            value = f"{value} of {found['runs']}"
        if row.get("above"):
            value = f"> {value}"
        elif row.get("floor") is not None:
            value = f"{_f(row['floor'], fmt)} to {value}"
        beside = row.get("bare_aiohttp")
        shown = "-" if beside is None else _f(beside, fmt)
        rows.append((row["target"], value, row["limit"], shown, row["verdict"]))
    at = found["runs"]
    title = f"Targets at {at} runs" + ("" if at == TARGET_RUNS else " (300 not measured)")
    if spread_s:
        title += f", each step's POSTs spread over {spread_s:g} s (the issue's come at once)"
    bound = found["rows"][0]["queue_bound"]
    note = (
        ""
        if math.isnan(bound) or spread_s
        else f"\n\nSearching queues on one core: {at} runs searched "
        f"{results[str(at)][SERVICE]['distinct_queries']} distinct queries, "
        f"{min(steps)} runs {results[str(min(steps))][SERVICE]['distinct_queries']}; "
        f"the searching ratio approaches {bound:.1f} whatever a query costs."
    )
    return title + "\n\n" + markdown_table(rows) + note
