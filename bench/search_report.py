"""The search bench's tables: searching-phase wall time, index build rate, query latency."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]


def percentile(values: Sequence[float], pct: int) -> float:
    """The `pct`-th percentile (inclusive method); the value itself for a single sample."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, the first column left-aligned and the others right-aligned."""
    lines = [tuple(headers), *map(tuple, rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    out = []
    for number, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        out.append("| " + " | ".join(cells) + " |")
        if number == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def searching_table(rows: list[Row]) -> str:
    """Wall time of the searching phase per N, next to the ideal and the serial time."""
    return table(
        ("queries N", "concurrency c", "wall ms (median)", "wall ms (max)",
         "ideal ceil(N/c) x 300", "serial N x 300", "max in flight", "verdict"),
        [
            (str(r["queries"]), str(r["concurrency"]), f"{r['median_ms']:.0f}",
             f"{r['max_ms']:.0f}", str(r["ideal_ms"]), str(r["serial_ms"]),
             str(r["max_in_flight"]), "grows with N/c" if r["met"] else "MISSED")
            for r in rows
        ],
    )  # fmt: skip


def build_table(rows: list[Row]) -> str:
    """Cold build time and rate per corpus, and the incremental re-syncs."""
    return table(
        ("corpus", "files", "passages", "cold build s", "files/s",
         "re-sync, none changed s", "re-sync, 10 changed s"),
        [
            (r["corpus"], str(r["files"]), str(r["passages"]), f"{r['cold_s']:.2f}",
             f"{r['files_per_s']:.0f}", _seconds(r.get("unchanged_s")),
             _seconds(r.get("changed_s")))
            for r in rows
        ],
    )  # fmt: skip


def latency_table(rows: list[Row]) -> str:
    """Query latency per kind of query."""
    return table(
        ("queries", "samples", "p50 ms", "p99 ms", "max ms", "hits (mean)"),
        [
            (r["kind"], str(r["samples"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
             f"{r['max_ms']:.2f}", f"{r['hits']:.1f}")
            for r in rows
        ],
    )  # fmt: skip


def latency_row(kind: str, samples: list[tuple[float, int]]) -> Row:
    """p50/p99/max of (seconds, hits) samples, in milliseconds."""
    ms = [seconds * 1e3 for seconds, _ in samples]
    return {
        "kind": kind,
        "samples": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "hits": statistics.fmean(hits for _, hits in samples),
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
