"""Store benchmark: retention on a large SQLite run store, against the same on a small one.

A store is filled with finished runs (60 events each, a 3 KB `done`), then copied, so each
scenario starts from the same file. Measured on each copy:

- a prune that deletes what is past `--retention-runs`, and meanwhile the longest a listing
  (`list_runs`, what `GET /v1/runs` asks) waited, asked every 10 ms: the store has one
  connection, so a listing waits for whatever holds it;
- a prune with nothing to delete (`--retention-runs` above the store's size), as at every start
  and every 10 min;
- the scan for runs a stopped process left open (every start);
- a page of `GET /v1/runs?awaiting=plan_review` (the store's part: listing and tails);
- the migration that records when each stored run ended (schema 6), once per store.

"legacy" is each as it was before, run in the same bench on its own copy: the prune (one
query with `id NOT IN (the newest max_runs)`, then one call deleting every run found), the scan
reading every run's last event, and the awaiting page reading up to 5,000 runs of every kind.
The small store (100 runs) is the baseline: the figures that grow with the store show against
it.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from harness import announce_machine, parse_flags, save_json

from research_service.events import Event
from research_service.runs import sqlite_db, sqlite_log
from research_service.runs.migrations import LAST_NAME, MIGRATIONS_TABLE
from research_service.runs.models import RunRecord
from research_service.runs.sqlite_log import SqliteEventLog

#: The awaiting page as it was: pages of every run, up to this many runs, each page's tails.
LEGACY_SCAN_PAGE: Final = 200
LEGACY_MAX_SCAN: Final = 5000

EVENTS_PER_RUN: Final = 60
DONE: Final = {"status": "completed", "answer": "word " * 600, "timings_ms": {"total": 1}}
PROBE_EVERY_S: Final = 0.01
SMALL: Final = 100


@dataclass(frozen=True, slots=True)
class Params:
    """The large store's size, and how many runs retention keeps of it."""

    runs: int
    keep: int


FULL: Final = Params(runs=40_000, keep=10_000)
QUICK: Final = Params(runs=600, keep=150)


@dataclass(frozen=True, slots=True)
class Figure:
    """One store, one prune."""

    store_runs: int
    prune: str
    deleted: int
    prune_s: float
    listing_wait_max_ms: float
    noop_prune_ms: float
    open_runs_scan_ms: float
    awaiting_page_ms: float


@dataclass(frozen=True, slots=True)
class Migration:
    """The step to schema 6 on one store."""

    store_runs: int
    seconds: float


async def fill(path: Path, runs: int) -> None:
    """A store of `runs` finished runs, one second apart, oldest first."""
    log = await sqlite_log.open(path)
    start = time.time() - runs
    for n in range(runs):
        run_id = f"{n:016x}"
        await log.create_run(RunRecord(run_id, "How is a store kept small?", created_at=start + n))
        for seq in range(1, EVENTS_PER_RUN):
            await log.append(Event.create(run_id, seq, "token", {"text": "word "}, t_ms=seq))
        await log.append(Event.create(run_id, EVENTS_PER_RUN, "done", DONE, t_ms=EVENTS_PER_RUN))
    await log.close()


async def legacy_prune(log: SqliteEventLog, *, max_runs: int) -> int:
    """The prune before batching: every run past the limit found, then deleted, in one go."""
    sql = (
        f"SELECT id FROM runs WHERE {LAST_NAME} = 'done' AND (created_at < ? OR id NOT IN "
        "(SELECT id FROM runs ORDER BY created_at DESC, id DESC LIMIT ?))"
    )
    rows = await log.db.call(log.db.query, sql, (float("-inf"), max_runs))
    doomed = [str(row[0]) for row in rows]
    if doomed:
        await log.db.call(log.db.delete_runs, doomed)
    return len(doomed)


async def legacy_scan(log: SqliteEventLog) -> int:
    """The scan for runs left open before schema 6: every run's last event read."""
    sql = f"SELECT id FROM runs WHERE coalesce({LAST_NAME}, '') != 'done' ORDER BY created_at, id"
    return len(await log.db.call(log.db.query, sql, ()))


async def awaiting_page(log: SqliteEventLog, *, legacy: bool) -> int:
    """What a page of `?awaiting=` asks the store: runs a page at a time, and their tails."""
    scanned = 0
    before = None
    while scanned < LEGACY_MAX_SCAN:
        records = await log.list_runs(limit=LEGACY_SCAN_PAGE, before=before, unfinished=not legacy)
        await log.tails([r.id for r in records])
        scanned += len(records)
        if len(records) < LEGACY_SCAN_PAGE:
            break
        before = records[-1].sort_key
    return scanned


def migration_s(source: Path) -> float:
    """On a copy of `source` taken back to schema 5: how long the step to schema 6 takes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "runs.sqlite3"
        shutil.copy(source, path)
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("DROP INDEX runs_open")
            db.execute("ALTER TABLE runs DROP COLUMN ended_at")
            db.execute(f"DELETE FROM {MIGRATIONS_TABLE} WHERE version = 6")
            db.execute("PRAGMA user_version = 5")
        finally:
            db.close()
        began = time.perf_counter()
        outcome = sqlite_db.upgrade(path)
        seconds = time.perf_counter() - began
        assert [step.version for step in outcome.applied] == [6], outcome
    return seconds


async def measure(source: Path, runs: int, keep: int, prune: str) -> Figure:
    """On a copy of `source`: the scan, a prune keeping every run, then one down to `keep`
    runs while a listing is asked every 10 ms."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "runs.sqlite3"
        shutil.copy(source, path)
        log = await sqlite_log.open(path)
        try:
            began = time.perf_counter()
            if prune == "legacy":
                await legacy_scan(log)
            else:
                await log.interrupted_runs()
            scan_ms = (time.perf_counter() - began) * 1000
            began = time.perf_counter()
            await awaiting_page(log, legacy=prune == "legacy")
            awaiting_ms = (time.perf_counter() - began) * 1000
            began = time.perf_counter()
            if prune == "legacy":
                await legacy_prune(log, max_runs=runs)
            else:
                await log.prune(max_age_s=None, max_runs=runs)
            noop_ms = (time.perf_counter() - began) * 1000
            waits: list[float] = []
            pruning = asyncio.Event()

            async def probe() -> None:
                while not pruning.is_set():
                    asked = time.perf_counter()
                    await log.list_runs(limit=20)
                    waits.append(time.perf_counter() - asked)
                    await asyncio.sleep(PROBE_EVERY_S)

            prober = asyncio.create_task(probe())
            began = time.perf_counter()
            if prune == "legacy":
                deleted = await legacy_prune(log, max_runs=keep)
            else:
                deleted = await log.prune(max_age_s=None, max_runs=keep)
            prune_s = time.perf_counter() - began
            pruning.set()
            await prober
        finally:
            await log.close()
    return Figure(runs, prune, deleted, prune_s, max(waits) * 1000, noop_ms, scan_ms, awaiting_ms)


async def run(params: Params) -> tuple[list[Figure], list[Migration]]:
    """Each store size, each prune, on copies of the same files; each size's migration."""
    figures = []
    steps = []
    with tempfile.TemporaryDirectory() as folder:
        for runs, keep in ((SMALL, SMALL // 4), (params.runs, params.keep)):
            source = Path(folder) / f"store-{runs}.sqlite3"
            await fill(source, runs)
            for prune in ("legacy", "current"):
                figures.append(await measure(source, runs, keep, prune))
            steps.append(Migration(runs, migration_s(source)))
    return figures, steps


def render(figures: list[Figure], steps: list[Migration]) -> str:
    """The results as markdown tables."""
    head = (
        "| store runs | code | deleted | prune s | a listing waited at most, ms "
        "| prune with nothing to delete, ms | scan for open runs, ms | awaiting page, ms |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = [
        f"| {f.store_runs:,} | {f.prune} | {f.deleted:,} | {f.prune_s:.2f} | "
        f"{f.listing_wait_max_ms:.0f} | {f.noop_prune_ms:.1f} | {f.open_runs_scan_ms:.1f} | "
        f"{f.awaiting_page_ms:.1f} |"
        for f in figures
    ]
    migrations = ["", "| store runs | step to schema 6, s |", "|---|---|"]
    migrations += [f"| {m.store_runs:,} | {m.seconds:.2f} |" for m in steps]
    return "\n".join([head, *rows, *migrations])


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the bench, print the table, optionally save JSON."""
    args = parse_flags(__doc__, argv, pinning=False)
    params = QUICK if args.quick else FULL
    info = announce_machine()
    figures, steps = asyncio.run(run(params))
    print(render(figures, steps))
    document: dict[str, Any] = {"machine": info, "params": asdict(params)}
    document["results"] = [asdict(f) for f in figures]
    document["migrations"] = [asdict(m) for m in steps]
    save_json(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
