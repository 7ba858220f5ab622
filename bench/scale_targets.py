"""The scale bench's targets (issue 16, at 300 runs), their verdicts, and their table."""

from __future__ import annotations

import math
from typing import Any, Final

from report import markdown_table
from scale_client import LAG_GAUGE

SERVICE: Final = "research-service"
BASELINE: Final = "bare aiohttp"
#: Issue 16's targets at 300 runs.
TARGET_RUNS: Final = 300
SEARCH_GROWTH_MAX: Final = 2.0
POST_P99_MAX_MS: Final = 100.0
LAG_P99_MAX_MS: Final = 50.0
LAG_MAX_MAX_MS: Final = 100.0
STALL_MAX_MS: Final = 20.0


def figure(value: float, fmt: str = ",.0f") -> str:
    """`value` formatted, or `-` for NaN."""
    return "-" if math.isnan(value) else format(value, fmt)


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
        _stall_row(
            "longest loop stall ms"
            + ("" if f["stall_source"] == LAG_GAUGE else " (a histogram bucket)"),
            f,
            base,
            "stall",
        )
    )
    # The same target read from when every run had arrived: the runs executing, nothing new.
    rows.append(
        _stall_row(
            "longest loop stall once every stream is open ms (a histogram bucket)",
            f,
            base,
            "executing_stall",
        )
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


def _stall_row(target: str, f: dict[str, Any], base: dict[str, Any], key: str) -> dict[str, Any]:
    """The stall target's row for the stall read as `key` (`stall`, `executing_stall`).

    Read from the gauge, a stall is a value; from the histogram, the bucket (floor, value]
    it fell in, or above the last bucket's bound (`above`). Bare aiohttp's is read alike.
    """
    above = bool(f.get(f"{key}_above_last_bucket"))
    floor = f.get(f"{key}_floor_ms")
    return {
        "target": target,
        "value": f[f"{key}_ms"],
        "floor": floor,
        "above": above,
        "limit": f"< {STALL_MAX_MS:g}",
        "bare_aiohttp": base.get(f"{key}_ms", math.nan),
        "bare_floor": base.get(f"{key}_floor_ms"),
        "verdict": _verdict(math.inf if above else f[f"{key}_ms"], STALL_MAX_MS, floor=floor),
    }


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
        value = figure(row["value"], fmt)
        if row["target"] == "runs completed":
            value = f"{value} of {found['runs']}"
        if row.get("above"):
            value = f"> {value}"
        elif row.get("floor") is not None:
            value = f"{figure(row['floor'], fmt)} to {value}"
        beside = row.get("bare_aiohttp")
        shown = "-" if beside is None else figure(beside, fmt)
        if row.get("bare_floor") is not None and beside is not None and not math.isnan(beside):
            shown = f"{figure(row['bare_floor'], fmt)} to {shown}"
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
