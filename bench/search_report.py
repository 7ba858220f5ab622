"""The search bench's tables: searching-phase wall time, index build rate, query cost, stalls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Row = dict[str, Any]


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


def cost_table(rows: list[Row]) -> str:
    """CPU per query, three ways, and today's search as a share of the others."""
    return table(
        ("queries", "samples", "bare bm25 p50 / p99", "before p50 / p99", "after p50 / p99",
         "after ÷ before p50 / p99", "after ÷ bare p50 / p99", "hits (mean)"),
        [_cost_cells(r) for r in rows],
    )  # fmt: skip


def stall_table(rows: list[Row]) -> str:
    """The event loop's longest stall while searches run concurrently, per way."""
    return table(
        ("way", "queries", "at once", "queries/s", "CPU ms per query", "loop stall p99 ms",
         "loop stall max ms", "max per round ms"),
        [
            (r["way"], str(r["queries"]), str(r["concurrency"]) if r["queries"] else "-",
             f"{r['queries_per_s']:.0f}" if r["queries"] else "-",
             f"{r['cpu_ms_per_query']:.2f}" if r["queries"] else "-", f"{r['stall_p99_ms']:.2f}",
             f"{r['stall_max_ms']:.1f}",
             " / ".join(f"{ms:.1f}" for ms in r["stall_max_per_round_ms"]))
            for r in rows
        ],
    )  # fmt: skip


def _cost_cells(r: Row) -> tuple[str, ...]:
    def pair(way: str) -> str:
        if f"{way}_p50_ms" not in r:
            return "-"
        return f"{r[f'{way}_p50_ms']:.2f} / {r[f'{way}_p99_ms']:.2f}"

    def ratio(other: str) -> str:
        if f"{other}_p50_ms" not in r:
            return "-"
        return " / ".join(
            f"{r[f'after_p{pct}_ms'] / r[f'{other}_p{pct}_ms']:.2f}"
            if r[f"{other}_p{pct}_ms"]
            else "-"
            for pct in (50, 99)
        )

    hits = f"{r['hits']:.1f}" if "hits" in r else "-"
    return (r["kind"], str(r["samples"]), pair("bare"), pair("before"), pair("after"),
            ratio("before"), ratio("bare"), hits)  # fmt: skip


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
