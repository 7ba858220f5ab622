"""Query cost on one index, three ways side by side, and the event loop while searches run.

- `bare`: a bare FTS5 bm25() query (the passages' rowids and ranks, best first, LIMIT 8): what
  SQLite alone costs, the floor any ranking on this index pays.
- `before`: the search as it was before issue 16 (bench/search_legacy.py, copied from 36f0c67).
- `after`: today's `CorpusIndex.search`.

Each query of the mix is run by all three in turn (the order rotating from query to query, so
that neither a drift in machine speed nor a warm cache favours one), timed in CPU seconds of
the calling thread (SQLite runs in it) and in wall seconds. `before` and `after` must give the
same hits; the bench counts the queries where they differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

from measure import percentile
from search_legacy import LegacySearch
from search_report import Row

from research_service.corpus.index import CorpusIndex, fts_query
from research_service.providers.local_search import LocalSearch
from research_service.runs.models import DEFAULT_MAX_SOURCES

ENGINES: Final = ("bare", "before", "after")
ALL: Final = "all queries"
THREADED: Final = "all queries, LocalSearch.search (its thread), wall"
BARE: Final = (
    "SELECT rowid, bm25(passages, 10.0, 4.0, 1.0) AS rank FROM passages "
    "WHERE passages MATCH ? ORDER BY rank LIMIT ?"
)
# The loop-lag probe's timer: a stall of S ms shows as a lag between S - 1 ms and S.
PROBE_S: Final = 0.001
IDLE_S: Final = 2.0  # about as long as one round of `after`
CONCURRENCY: Final = 50
LIMIT: Final = DEFAULT_MAX_SOURCES


class Searcher(Protocol):
    """What each of the three ways offers."""

    def search(self, query: str, *, limit: int) -> list[Any]: ...


class BareSearch:
    """A bare FTS5 query on its own connection: the text made an FTS5 expression, bm25, LIMIT."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.Lock()  # one connection shared by threads, as the index does

    def search(self, query: str, *, limit: int) -> list[Any]:
        """The `limit` best passages' (rowid, rank)."""
        expression = fts_query(query)
        if not expression:
            return []
        with self._lock:
            return self._db.execute(BARE, (expression, limit)).fetchall()


@dataclass(frozen=True, slots=True)
class Sample:
    """One query by one way: CPU and wall seconds, and how many hits."""

    cpu_s: float
    wall_s: float
    hits: int


def timed(searcher: Searcher, query: str) -> tuple[Sample, list[Any]]:
    """Run one search, timing it."""
    cpu, wall = time.thread_time(), time.perf_counter()
    found = searcher.search(query, limit=DEFAULT_MAX_SOURCES)
    sample = Sample(time.thread_time() - cpu, time.perf_counter() - wall, len(found))
    return sample, found


async def costs(db: Path, mix: list[tuple[str, str]], *, passes: int) -> tuple[list[Row], int]:
    """Per kind of query, each way's CPU p50/p99; and how many queries `before` and `after`
    answered differently. One warm-up pass, then `passes` timed ones."""
    samples: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    threaded: list[float] = []
    differ = 0
    with CorpusIndex.open(db) as index, _connection(db) as legacy, _connection(db) as bare:
        ways: dict[str, Searcher] = {
            "bare": BareSearch(bare),
            "before": LegacySearch(legacy),
            "after": index,
        }
        # What the pipeline calls: the search on the provider's thread. Without its cache of
        # answers, which would answer every pass after the first.
        provider = LocalSearch(index, cache_size=0)
        for query_pass in range(passes + 1):
            for number, (kind, query) in enumerate(mix):
                answers: dict[str, list[Any]] = {}
                for way in _rotated(ENGINES, number):
                    sample, answers[way] = timed(ways[way], query)
                    if query_pass:  # pass 0 warms the page cache and Python's caches
                        samples[(way, kind)].append(sample)
                        samples[(way, ALL)].append(sample)
                started = time.perf_counter()
                await provider.search(query, limit=DEFAULT_MAX_SOURCES)
                if query_pass:
                    threaded.append(time.perf_counter() - started)
                elif answers["before"] != answers["after"]:
                    differ += 1
    kinds = [ALL, *sorted({kind for kind, _ in mix})]
    rows = [_cost_row(kind, {way: samples[(way, kind)] for way in ENGINES}) for kind in kinds]
    rows.append({"kind": THREADED, "samples": len(threaded), "after_p50_ms": _ms(threaded, 50),
                 "after_p99_ms": _ms(threaded, 99)})  # fmt: skip
    return rows, differ


async def stalls(db: Path, queries: list[str], *, rounds: int) -> list[Row]:
    """The event loop while CONCURRENCY searches at a time run through `queries` in worker
    threads, each way in turn, `rounds` times: the longest stall, throughput, CPU per query.
    First the probe alone for IDLE_S: the loop's own stalls on this machine, searching nothing.
    """
    runs: dict[str, list[Row]] = defaultdict(list)
    with (
        CorpusIndex.open(db) as index,
        _connection(db) as legacy,
        _connection(db) as bare,
        ThreadPoolExecutor(max_workers=1) as one,
    ):
        provider = LocalSearch(index, cache_size=0)  # each round searches, as the others do
        old, floor = LegacySearch(legacy), BareSearch(bare)
        loop = asyncio.get_running_loop()
        ways: dict[str, Callable[[str], Awaitable[object]]] = {
            # On one thread, as LocalSearch runs today's search.
            "bare": lambda q: loop.run_in_executor(one, partial(floor.search, q, limit=LIMIT)),
            # The provider of 36f0c67 ran the old search in `asyncio.to_thread`.
            "before": lambda q: asyncio.to_thread(old.search, q, limit=LIMIT),
            "after": lambda q: provider.search(q, limit=LIMIT),
        }
        for _ in range(rounds):
            runs["idle"].append(await _idle())
            for way in ENGINES:
                runs[way].append(await _concurrent(ways[way], queries))
        provider.close()
    return [_stall_row(way, runs[way]) for way in ("idle", *ENGINES)]


async def _idle() -> Row:
    """The probe alone, for IDLE_S."""
    lags = await _probing(asyncio.sleep(IDLE_S))
    return {"wall_s": IDLE_S, "cpu_s": 0.0, "queries": 0, "lags": lags}


async def _concurrent(search: Callable[[str], Awaitable[object]], queries: list[str]) -> Row:
    """Run `queries` CONCURRENCY at a time while the probe watches the loop."""
    pending = iter(queries)

    async def worker() -> None:
        for query in pending:  # shared: each worker takes the next query
            await search(query)

    async def everyone() -> None:
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    cpu, wall = time.process_time(), time.perf_counter()
    lags = await _probing(everyone())
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"wall_s": wall, "cpu_s": cpu, "queries": len(queries), "lags": lags}


async def _probing(work: Coroutine[Any, Any, None]) -> list[float]:
    """Await `work` while measuring how late a PROBE_S timer fires, again and again."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []

    async def probe() -> None:
        while True:
            due = loop.time() + PROBE_S
            await asyncio.sleep(PROBE_S)
            lags.append(max(0.0, loop.time() - due))

    watcher = asyncio.create_task(probe())
    await asyncio.sleep(PROBE_S * 2)  # the probe is running before the work starts
    try:
        await work
    finally:
        watcher.cancel()
    return lags


def _stall_row(way: str, runs: list[Row]) -> Row:
    lags = [lag * 1e3 for run in runs for lag in run["lags"]]
    wall = sum(run["wall_s"] for run in runs)
    queries = sum(run["queries"] for run in runs)
    return {
        "way": way,
        "concurrency": CONCURRENCY,
        "queries": queries,
        "queries_per_s": queries / wall,
        "cpu_ms_per_query": sum(run["cpu_s"] for run in runs) * 1e3 / max(queries, 1),
        "stall_max_ms": max(lags),
        "stall_max_per_round_ms": [max(run["lags"]) * 1e3 for run in runs],
        "stall_p99_ms": percentile(lags, 99),
        "probe_samples": len(lags),
    }


def _cost_row(kind: str, by_way: dict[str, list[Sample]]) -> Row:
    row: Row = {"kind": kind, "samples": len(by_way["after"])}
    for way, samples in by_way.items():
        for pct in (50, 99):
            row[f"{way}_p{pct}_ms"] = _ms([s.cpu_s for s in samples], pct)
        row[f"{way}_wall_p50_ms"] = _ms([s.wall_s for s in samples], 50)
        row[f"{way}_mean_ms"] = statistics.fmean(s.cpu_s for s in samples) * 1e3
    row["hits"] = statistics.fmean(s.hits for s in by_way["after"])
    return row


def _ms(seconds: list[float], pct: int) -> float:
    return percentile([s * 1e3 for s in seconds], pct)


def _rotated(items: tuple[str, ...], by: int) -> list[str]:
    start = by % len(items)
    return list(itertools.islice(itertools.cycle(items), start, start + len(items)))


def _connection(db: Path) -> contextlib.closing[sqlite3.Connection]:
    """A connection to the index that worker threads may share, closed on exit."""
    return contextlib.closing(sqlite3.connect(db, check_same_thread=False))
