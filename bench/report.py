"""The bench's table: each figure per server, its target and research-service's ratio to it."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

#: Per server kind ("research", "sse", "raw"), each figure by key.
Results = dict[str, dict[str, float]]

COLUMNS: Final = ("research", "sse", "raw")
HEADERS: Final = (
    "metric",
    "research-service",
    "aiohttp-sse",
    "raw aiohttp",
    "target",
    "ratio",
    "verdict",
)


@dataclass(frozen=True, slots=True)
class Row:
    """One figure: how to label and format it, and what research-service must stay within."""

    key: str
    label: str
    fmt: str
    target: str = ""
    #: A baseline's kind (its figure is the limit), a fixed limit, or None for no target.
    limit: str | float | None = None


ROWS: Final = (
    Row("cpu_1_live_us", "CPU µs / token event, 1 listener, live", ".1f", "<= aiohttp-sse", "sse"),
    Row(
        "cpu_fanout_live_us",
        "CPU µs / token event, {fanout} listeners, live",
        ".1f",
        "<= raw aiohttp",
        "raw",
    ),
    Row("cpu_1_burst_us", "CPU µs / token event, 1 listener, burst", ".2f"),
    Row("cpu_fanout_burst_us", "CPU µs / token event, {fanout} listeners, burst", ".2f"),
    Row("cpu_1_replay_us", "CPU µs / token event, 1 listener, replay", ".2f"),
    Row("cpu_fanout_replay_us", "CPU µs / token event, {fanout} listeners, replay", ".2f"),
    Row("first_phase_p50_ms", "POST /v1/runs -> first phase, p50 ms", ".2f"),
    Row("first_phase_p99_ms", "POST /v1/runs -> first phase, p99 ms", ".2f", "< 10 ms", 10.0),
    Row("first_byte_p50_ms", "GET events -> first byte, p50 ms", ".2f"),
    Row("first_byte_p99_ms", "GET events -> first byte, p99 ms", ".2f"),
    Row("idle_kib", "KiB per idle listener ({idle} open)", ".1f", "<= 16 KiB", 16.0),
    Row("idle_tasks", "tasks per idle listener", ".2f"),
    Row("idle_healthz_p50_ms", "GET /healthz with them open, p50 ms", ".2f"),
    Row("idle_healthz_p99_ms", "GET /healthz with them open, p99 ms", ".2f", "< 20 ms", 20.0),
    Row("idle_lag_max_ms", "longest loop stall with them open, ms", ".1f"),
    Row("released_s", "then their run's last events reach them all, s", ".2f"),
    Row("released_healthz_max_ms", "GET /healthz meanwhile, max ms", ".1f"),
    Row("released_lag_max_ms", "longest loop stall meanwhile, ms", ".1f"),
)


def _limit(row: Row, results: Results) -> float | None:
    if isinstance(row.limit, str):
        return results.get(row.limit, {}).get(row.key)
    return row.limit


def verdicts(results: Results) -> dict[str, tuple[float, bool]]:
    """For each figure with a target: research-service's ratio to its limit, and whether met."""
    found: dict[str, tuple[float, bool]] = {}
    for row in ROWS:
        limit = _limit(row, results)
        value = results.get("research", {}).get(row.key)
        if limit is None or value is None or limit <= 0:
            continue
        ratio = value / limit
        met = ratio < 1 if row.target.startswith("<") and "=" not in row.target else ratio <= 1
        found[row.key] = (ratio, met)
    return found


def render_table(results: Results, *, params: dict[str, Any]) -> str:
    """A plain-text table, one row per figure."""
    checks = verdicts(results)
    table: list[tuple[str, ...]] = [HEADERS]
    for row in ROWS:
        cells = [row.label.format(**params)]
        for kind in COLUMNS:
            value = results.get(kind, {}).get(row.key)
            cells.append("n/a" if value is None else format(value, row.fmt))
        cells.append(row.target or "-")
        if row.key in checks:
            ratio, met = checks[row.key]
            cells += [f"{ratio:.2f}", "met" if met else "MISSED"]
        else:
            cells += ["-", "-"]
        table.append(tuple(cells))
    return markdown_table(table)


def markdown_table(table: list[tuple[str, ...]]) -> str:
    """Rows as a Markdown table: the first row is the header, first column left-aligned."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = []
    for number, line in enumerate(table):
        first = line[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        lines.append("| " + " | ".join([first, *rest]) + " |")
        if number == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "research_service"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{'+dirty' if dirty else ''}"


def machine() -> dict[str, Any]:
    """What the figures were measured on, and which research-service."""
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "aiohttp-sse": version("aiohttp-sse"),
        "commit": _commit(),
    }
