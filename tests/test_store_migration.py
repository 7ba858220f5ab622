"""A run store written by the previous release (schema 1) opens, migrated, with nothing lost."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from research_service.errors import ConfigError
from research_service.events import Event
from research_service.runs import sqlite_log
from research_service.runs.sqlite_db import RUN_STORE_FILE
from tests.conftest import MakeService
from tests.sse import listen

#: A real run (shipped with the tests), written into the old file as that release wrote it.
RECORDING = Path(__file__).parent / "recordings" / "builtin_completed.jsonl"

#: The previous release's schema, as it shipped (research_service/runs/sqlite_db.py, version 1).
SCHEMA_V1 = (
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        question TEXT NOT NULL,
        options TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at, id)",
    """CREATE TABLE IF NOT EXISTS events (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        name TEXT NOT NULL,
        t_ms INTEGER NOT NULL,
        wire BLOB NOT NULL,
        PRIMARY KEY (run_id, seq)
    ) WITHOUT ROWID""",
)


def recorded() -> tuple[dict[str, Any], list[Event]]:
    """The shipped run's header and its events, encoded for the wire."""
    header, *lines = (json.loads(line) for line in RECORDING.read_text().splitlines())
    events = [
        Event.create(header["run_id"], e["seq"], e["event"], e["data"], t_ms=e["t_ms"])
        for e in lines
    ]
    return header, events


def write_v1_store(path: Path, *, version: int = 1) -> tuple[dict[str, Any], list[Event]]:
    """A run store file as the previous release left it, holding one finished run."""
    header, events = recorded()
    created = datetime.fromisoformat(header["created_at"].replace("Z", "+00:00")).timestamp()
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("BEGIN")
        for statement in SCHEMA_V1:
            db.execute(statement)
        db.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?)",
            (header["run_id"], header["question"], json.dumps(header["options"]), created),
        )
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", [tuple(e) for e in events])
        db.execute(f"PRAGMA user_version = {version}")
        db.execute("COMMIT")
    finally:
        db.close()
    return header, events


def inspect(path: Path) -> tuple[int, set[str], list[str]]:
    """The file's schema version, its tables and the columns of `runs`."""
    db = sqlite3.connect(path)
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        columns = [row[1] for row in db.execute("PRAGMA table_info(runs)")]
    finally:
        db.close()
    return version, tables, columns


async def test_a_version_1_store_opens_with_its_runs_and_events_and_becomes_version_2(
    tmp_path: Path,
) -> None:
    path = tmp_path / RUN_STORE_FILE
    header, events = write_v1_store(path)
    assert inspect(path) == (1, {"runs", "events"}, ["id", "question", "options", "created_at"])

    log = await sqlite_log.open(path)
    try:
        record = await log.get_run(header["run_id"])
        assert record is not None
        assert record.owner is None
        assert record.question == header["question"]
        assert record.options.to_dict() == header["options"]
        assert record.created_iso == header["created_at"]
        assert await log.read(header["run_id"], after=0) == events
        assert [r.id for r in await log.list_runs(limit=10)] == [header["run_id"]]
        assert await log.list_runs(limit=10, owner="alice") == []
        tail = (await log.tails([header["run_id"]]))[header["run_id"]]
        assert tail.event_count == len(events)
        assert tail.end is not None
        assert tail.end.status == "completed"
        assert await log.interrupted_runs() == []
    finally:
        await log.close()

    version, tables, columns = inspect(path)
    assert version == 2
    assert {"runs", "events", "api_keys"} <= tables
    assert columns == ["id", "question", "options", "created_at", "owner"]

    # Opened again, a migrated file is left as it is.
    again = await sqlite_log.open(path)
    try:
        assert await again.read(header["run_id"], after=0) == events
    finally:
        await again.close()
    assert inspect(path)[0] == 2


async def test_a_store_from_a_newer_release_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = tmp_path / RUN_STORE_FILE
    write_v1_store(path, version=99)
    before = inspect(path)
    with pytest.raises(ConfigError) as refused:
        await sqlite_log.open(path)
    message = str(refused.value)
    assert "99" in message
    assert "upgrade research-service" in message
    assert str(path) in message
    assert inspect(path) == before


async def test_a_migration_that_fails_leaves_the_version_1_file_as_it_was(
    tmp_path: Path,
) -> None:
    """Each migration is one transaction: half a schema is never left behind."""
    path = tmp_path / RUN_STORE_FILE
    _, events = write_v1_store(path)
    db = sqlite3.connect(path)
    try:
        # Something the migration itself makes is already there: its CREATE fails.
        db.execute("CREATE TABLE api_keys (id TEXT)")
        db.commit()
    finally:
        db.close()
    with pytest.raises(ConfigError):
        await sqlite_log.open(path)
    version, tables, columns = inspect(path)
    assert version == 1
    assert tables == {"runs", "events", "api_keys"}  # only the table made beforehand
    assert columns == ["id", "question", "options", "created_at"]
    db = sqlite3.connect(path)
    try:
        stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        db.close()
    assert stored == len(events)


async def test_a_service_on_a_migrated_store_serves_the_old_run(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    header, events = write_v1_store(tmp_path / "data" / RUN_STORE_FILE)
    run_id = header["run_id"]
    service = await make_service(store="sqlite", auth="off")

    listed = await client.get(service.url("/v1/runs"))
    assert [run["id"] for run in listed.json()["runs"]] == [run_id]
    snapshot = await client.get(service.url(f"/v1/runs/{run_id}"))
    assert snapshot.status_code == 200, snapshot.text
    assert snapshot.json()["status"] == "completed"
    assert snapshot.json()["question"] == header["question"]

    received = await listen(client, service.url(f"/v1/runs/{run_id}/events"))
    assert received.ids == [event.id for event in events]
    assert received.last[1] == events[-1].data

    recording = await client.get(service.url(f"/v1/runs/{run_id}/recording"))
    assert recording.status_code == 200
    # Every event line as the shipped recording has it, byte for byte.
    assert recording.text.splitlines()[1:] == RECORDING.read_text().splitlines()[1:]
