"""Write tests/data/runs-schema2.sqlite3: a run store as release 0.1 (schema 2) leaves it.

It must be written by that release's code, not by a newer one (which would add its own
migrations table). From the repository's root:

    git archive 1ebd0c6 research_service | tar -x -C /tmp/rs-schema2
    PYTHONPATH=/tmp/rs-schema2 .venv/bin/python tests/data/make_run_store_schema2.py

The file holds two shipped runs: the completed one owned by "alice", the cancelled one with
no owner (a run made before owners existed), and one API key named "alice".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
from datetime import datetime
from pathlib import Path

import research_service
from research_service.auth.key_store import SqliteKeys
from research_service.events import Event
from research_service.runs import sqlite_log
from research_service.runs.models import RunOptions, RunRecord

HERE = Path(__file__).resolve().parent
RECORDINGS = HERE.parent / "recordings"
STORE = HERE / "runs-schema2.sqlite3"
#: Each shipped recording and the owner its run gets in the store.
RUNS = (("builtin_completed.jsonl", "alice"), ("builtin_cancelled.jsonl", None))


def run_of(recording: Path, owner: str | None) -> tuple[RunRecord, list[Event]]:
    """A recording's run as a record and its events."""
    header, *lines = (json.loads(line) for line in recording.read_text().splitlines())
    created = datetime.fromisoformat(header["created_at"].replace("Z", "+00:00")).timestamp()
    options = RunOptions(**header["options"])
    record = RunRecord(header["run_id"], header["question"], options, created, owner)
    events = [
        Event.create(header["run_id"], e["seq"], e["event"], e["data"], t_ms=e["t_ms"])
        for e in lines
    ]
    return record, events


async def write() -> None:
    """Write every run through the release's own store."""
    log = await sqlite_log.open(STORE)
    try:
        for name, owner in RUNS:
            record, events = run_of(RECORDINGS / name, owner)
            await log.create_run(record)
            for event in events:
                await log.append(event)
    finally:
        await log.close()
    keys = SqliteKeys(STORE)
    try:
        keys.create("alice", admin=False)
    finally:
        keys.close()


def main() -> None:
    """Write the file afresh, then check it is what the tests expect of schema 2."""
    print(f"writing {STORE} with {research_service.__file__}")
    for leftover in (
        STORE,
        STORE.with_name(STORE.name + "-wal"),
        STORE.with_name(STORE.name + "-shm"),
    ):
        leftover.unlink(missing_ok=True)
    asyncio.run(write())
    with contextlib.closing(sqlite3.connect(STORE)) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != 2 or tables != {"runs", "events", "api_keys"}:
            sys.exit(
                f"not a schema 2 store (version {version}, tables {sorted(tables)}): see above"
            )
        db.execute("VACUUM")
    STORE.with_name(STORE.name + ".lock").unlink(missing_ok=True)


if __name__ == "__main__":
    main()
