"""The relay bench's table, in the layout of the stream bench's (bench/report.py)."""

from __future__ import annotations

from typing import Final

from report import COLUMNS, HEADERS, Results, Row, markdown_table

P99_TARGET_MS: Final = 5.0

ROWS: Final = (
    Row("latency_p50_ms", "chunk written -> token event read, p50 ms", ".2f"),
    Row(
        "latency_p99_ms",
        "chunk written -> token event read, p99 ms",
        ".2f",
        "< 5 ms",
        P99_TARGET_MS,
    ),
    Row("latency_max_ms", "chunk written -> token event read, max ms", ".2f"),
    Row("late_pct", "tokens read more than 5 ms after their chunk, %", ".2f"),
    Row("cpu_us", "CPU µs / token event ({tokens} per run)", ".1f"),
    Row("busy", "CPU share of one core in the window", ".3f"),
    Row("fake_cpu_us", "fake OpenAI server CPU µs / chunk (not counted)", ".1f"),
)


def render_table(results: Results, *, tokens: int) -> str:
    """A plain-text table, one row per figure; only the p99 has a target."""
    table: list[tuple[str, ...]] = [HEADERS]
    for row in ROWS:
        cells = [row.label.format(tokens=f"{tokens:,}")]
        for kind in COLUMNS:
            value = results.get(kind, {}).get(row.key)
            cells.append("n/a" if value is None else format(value, row.fmt))
        value = results.get("research", {}).get(row.key)
        if isinstance(row.limit, float) and value is not None:
            ratio = value / row.limit
            cells += [row.target, f"{ratio:.2f}", "met" if ratio < 1 else "MISSED"]
        else:
            cells += ["-", "-", "-"]
        table.append(tuple(cells))
    return markdown_table(table)


def cpu_ratios(results: Results) -> str:
    """research-service's CPU per token event as a multiple of each bare baseline's."""
    mine = results.get("research", {}).get("cpu_us")
    parts = []
    for kind, label in (("sse", "aiohttp-sse"), ("raw", "raw aiohttp")):
        theirs = results.get(kind, {}).get("cpu_us")
        if mine is not None and theirs:
            parts.append(f"{mine / theirs:.1f}x {label}")
    return "CPU per token event, research-service relaying: " + ", ".join(parts)
