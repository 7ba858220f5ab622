"""Search benchmark: searching-phase concurrency, index build rate, query cost, loop stalls.

1. The pipeline's searching phase (`search_all`) with N = 1, 4, 8 queries against a fake engine
   that answers each query after 300 ms, at the default concurrency: the wall time must follow
   ceil(N / concurrency) x 300 ms, not N x 300 ms.
2. Index build rate (files/s) into a fresh SQLite file: the default corpus (the stdlib docs),
   ~1,000 generated Markdown files and 100 generated PDFs; then incremental re-syncs.
3. Query cost (CPU p50/p99) on the default corpus over a few hundred varied queries: today's
   search beside the one before issue 16 and a bare FTS5 bm25() query, in the same run.
4. The longest event-loop stall while 50 searches at a time run in worker threads, each way.

Everything stays in this process and on the local disk; no network. bench/README.md explains
every figure. Run `python bench/search_bench.py --help`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from harness import announce_machine, parse_flags, save_json
from search_corpus import markdown_folder, pdf_folder, query_mix
from search_fake import LATENCY_S, searching_phase
from search_latency import CONCURRENCY, costs, stalls
from search_report import Row, build_table, cost_table, searching_table, stall_table

from research_service.corpus.index import CorpusIndex
from research_service.corpus.indexer import index_folder
from research_service.corpus.stdlib import stdlib_documents
from research_service.settings import Settings

QUERY_COUNTS: Final = (1, 4, 8)
CHANGED_FILES: Final = 10
CLI: Final = Path(sys.executable).with_name("research-service")
CLI_TIMEOUT_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class Params:
    """How big each measurement is."""

    repeats: int  # searching phases per N
    builds: int  # fresh-file builds per corpus
    markdown_files: int
    pdf_files: int
    pdf_pages: int
    queries: int
    passes: int  # timed passes over the queries, after one warm-up pass
    stall_rounds: int  # runs through the queries, CONCURRENCY at a time, per way


FULL: Final = Params(5, 3, 1_000, 100, 3, 300, 3, 3)
QUICK: Final = Params(1, 1, 200, 10, 2, 100, 1, 1)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def searching(params: Params, settings: Settings) -> list[Row]:
    """Each N `repeats` times, the Ns taking turns so that a drift in speed hits all alike."""
    concurrency = settings.search_concurrency
    walls: dict[int, list[float]] = defaultdict(list)
    in_flight: dict[int, int] = defaultdict(int)
    for _ in range(params.repeats):
        for n in QUERY_COUNTS:
            run = await searching_phase(
                n, concurrency=concurrency, timeout_s=settings.search_timeout_s
            )
            walls[n].append(run.wall_s * 1e3)
            in_flight[n] = max(in_flight[n], run.max_in_flight)
    rows = []
    step_ms = LATENCY_S * 1e3
    for n in QUERY_COUNTS:
        steps = math.ceil(n / concurrency)
        median = statistics.median(walls[n])
        rows.append(
            {
                "queries": n,
                "concurrency": concurrency,
                "median_ms": median,
                "max_ms": max(walls[n]),
                "ideal_ms": round(steps * step_ms),
                "serial_ms": round(n * step_ms),
                "max_in_flight": in_flight[n],
                # Closer to its own step than to the next one up.
                "met": median < (steps + 0.5) * step_ms,
            }
        )
    return rows


def build_stdlib(db: Path) -> tuple[int, int, float]:
    """What `serve` does on its first start: list the stdlib docs and index them."""
    started = time.perf_counter()
    with CorpusIndex.open(db) as index:
        index.sync(stdlib_documents())
        stats = index.stats()
    return stats.documents, stats.passages, time.perf_counter() - started


def build_folder(folder: Path, db: Path) -> tuple[int, int, float]:
    """What `research-service index DIR` does, without the process around it."""
    result = index_folder(folder, db=db)
    return result.stats.documents, result.stats.passages, result.seconds


def rewrite_some(folder: Path, count: int) -> None:
    """Append a line to `count` files, so that the next sync re-reads exactly those."""
    for path in sorted(folder.rglob("*.md"))[:count]:
        with path.open("a", encoding="utf-8") as out:
            out.write("\nOne more line, written by the bench.\n")


def builds(params: Params, work: Path) -> tuple[list[Row], Path]:
    """Cold builds of each corpus into fresh files, then re-syncs; returns the stdlib index."""
    rows: list[Row] = []
    corpora: list[tuple[str, Path | None]] = [("stdlib docs (default corpus)", None)]
    say("generating the Markdown and PDF folders")
    markdown = markdown_folder(work / "markdown", files=params.markdown_files)
    corpora.append((f"{params.markdown_files} generated Markdown files", markdown))
    pdfs = pdf_folder(work / "pdf", files=params.pdf_files, pages=params.pdf_pages)
    corpora.append((f"{params.pdf_files} generated PDFs, {params.pdf_pages} pages each", pdfs))
    stdlib_db = work / "stdlib.sqlite3"
    for label, folder in corpora:
        say(f"building: {label}")
        timings, db = [], work / "unused.sqlite3"
        for number in range(params.builds):
            db = work / f"{len(rows)}-{number}.sqlite3"
            built = build_stdlib(db) if folder is None else build_folder(folder, db)
            files, passages, seconds = built
            timings.append(seconds)
        cold = statistics.median(timings)
        row: Row = {"corpus": label, "files": files, "passages": passages, "cold_s": cold,
                    "files_per_s": files / cold, "cold_runs_s": timings}  # fmt: skip
        if folder is None:
            row["unchanged_s"] = build_stdlib(db)[2]
            stdlib_db = db
        else:
            row["unchanged_s"] = build_folder(folder, db)[2]
            if folder == markdown:
                rewrite_some(folder, CHANGED_FILES)
                row["changed_s"] = build_folder(folder, db)[2]
        rows.append(row)
    rows.append(cli_build(markdown, work / "cli.sqlite3", params.markdown_files))
    return rows, stdlib_db


def cli_build(folder: Path, db: Path, files: int) -> Row:
    """The real command in its own process: what a user waits for, interpreter start included."""
    say("building: the same Markdown files with `research-service index`")
    command = [str(CLI), "index", str(folder), "--db", str(db), "--quiet"]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=CLI_TIMEOUT_S)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, timeout=CLI_TIMEOUT_S)
    unchanged = time.perf_counter() - started
    with CorpusIndex.open(db) as index:
        stats = index.stats()
    return {"corpus": f"the same {files} via `research-service index` (process wall)",
            "files": stats.documents, "passages": stats.passages, "cold_s": seconds,
            "files_per_s": stats.documents / seconds,
            "unchanged_s": unchanged}  # fmt: skip


async def latencies(params: Params, db: Path) -> dict[str, Any]:
    """Query cost three ways, side by side, then the event loop under concurrent searches."""
    with contextlib.closing(sqlite3.connect(db)) as raw:
        names = sorted(n for (n,) in raw.execute("SELECT name FROM documents") if n)
    mix = query_mix(names, count=params.queries)
    rows, differ = await costs(db, mix, passes=params.passes)
    say(f"loop stalls: {CONCURRENCY} searches at a time, {params.stall_rounds} rounds")
    queries = [query for _, query in mix]
    stall_rows = await stalls(db, queries, rounds=params.stall_rounds)
    return {"costs": rows, "answers_differ": differ, "queries": len(mix), "stalls": stall_rows}


async def run(params: Params, work: Path) -> dict[str, list[Row]]:
    """The three measurements, in order."""
    settings = Settings()
    say("searching phase: N = 1, 4, 8 against a 300 ms engine")
    phase = await searching(params, settings)
    build_rows, stdlib_db = await asyncio.to_thread(builds, params, work)
    say("query cost on the default corpus: bare bm25, before, after")
    return {"searching": phase, "builds": build_rows, "latency": await latencies(params, stdlib_db)}


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the bench, print the tables, optionally save JSON."""
    args = parse_flags(__doc__, argv, pinning=False)
    params = QUICK if args.quick else FULL
    info = announce_machine()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="search-bench-") as tmp:
        results = asyncio.run(run(params, Path(tmp)))
    say(f"whole bench: {time.perf_counter() - started:.1f} s")
    print("Searching phase (fake engine, 300 ms per query)\n")
    print(searching_table(results["searching"]))
    print("\nIndex build (fresh SQLite file each time)\n")
    print(build_table(results["builds"]))
    latency = results["latency"]
    print("\nQuery cost on the default corpus (limit 8), CPU ms of the calling thread\n")
    print(cost_table(latency["costs"]))
    print(
        f"\nbefore and after answered {latency['queries'] - latency['answers_differ']} of "
        f"{latency['queries']} queries identically (hits, order, snippets, scores)"
    )
    print(f"\nEvent loop while {CONCURRENCY} searches at a time run in worker threads\n")
    print(stall_table(latency["stalls"]))
    save_json(args.json, {"machine": info, "params": asdict(params), "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
