"""Run stores written by earlier releases open, migrated step by step, with nothing lost."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from research_service.auth.key_store import SqliteKeys
from research_service.errors import ConfigError
from research_service.events import Event
from research_service.runs import migrations, postgres_db, sqlite_db, sqlite_log, sqlite_schema
from research_service.runs.migrations import MIGRATIONS_TABLE
from research_service.runs.sqlite_db import RUN_STORE_FILE
from tests import cli_process, postgres
from tests.conftest import MakeService
from tests.sse import listen

#: A real run (shipped with the tests), written into the old file as that release wrote it.
# The Postgres fixtures, for the `migrate --store postgres` test.
postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

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


def recorded_steps(path: Path) -> list[tuple[int, str, float | None]]:
    """The rows of the file's migrations table, in order."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows: list[tuple[int, str, float | None]] = db.execute(
            f"SELECT version, name, applied_at FROM {MIGRATIONS_TABLE} ORDER BY version"
        ).fetchall()
    return rows


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
    assert version == sqlite_schema.SCHEMA_VERSION
    assert {"runs", "events", "api_keys", "webhook_deliveries", "ended_sessions"} <= tables
    assert columns == ["id", "question", "options", "created_at", "owner", "ended_at"]

    # Opened again, a migrated file is left as it is.
    again = await sqlite_log.open(path)
    try:
        assert await again.read(header["run_id"], after=0) == events
    finally:
        await again.close()
    assert inspect(path)[0] == sqlite_schema.SCHEMA_VERSION


async def test_the_step_to_schema_6_records_when_each_stored_run_ended(tmp_path: Path) -> None:
    """Runs stored before it: a finished one gets its end, one left open none, and the scan
    for runs left open (every start) then reads the open runs' index."""
    path = tmp_path / RUN_STORE_FILE
    header, events = write_v1_store(path)
    left_open = "fedcba9876543210"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("INSERT INTO runs VALUES (?, 'left open', '{}', 5.0)", (left_open,))
        db.execute("INSERT INTO events VALUES (?, 1, 'phase', 4, X'00')", (left_open,))
    sqlite_db.upgrade(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        ends = dict(db.execute("SELECT id, ended_at FROM runs").fetchall())
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM runs WHERE ended_at IS NULL ORDER BY created_at, id"
        ).fetchall()
    created = datetime.fromisoformat(header["created_at"].replace("Z", "+00:00")).timestamp()
    assert ends == {
        header["run_id"]: pytest.approx(created + events[-1].t_ms / 1000),
        left_open: None,
    }
    assert "runs_open" in " ".join(str(step[-1]) for step in plan)

    log = await sqlite_log.open(path)
    try:
        assert [r.id for r in await log.interrupted_runs()] == [left_open]
        assert [r.id for r in await log.list_runs(limit=10, unfinished=True)] == [left_open]
    finally:
        await log.close()


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
    with pytest.raises(ConfigError, match="schema 1 → 2: run owners and API keys failed"):
        await sqlite_log.open(path)
    version, tables, columns = inspect(path)
    assert version == 1
    # The table made beforehand, and the record of schema 1 (kept: it is true).
    assert tables == {"runs", "events", "api_keys", MIGRATIONS_TABLE}
    assert recorded_steps(path) == [(1, "runs and their events", None)]
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


# --- the store file made by the schema 2 release, and the migrations table ----------------

#: A run store written by release 0.1 (schema 2) itself: see tests/data/make_run_store_schema2.py.
SCHEMA_2_STORE = Path(__file__).parent / "data" / "runs-schema2.sqlite3"
RECORDINGS = Path(__file__).parent / "recordings"


def copy_of_schema_2(data_dir: Path) -> Path:
    """A copy of the shipped schema 2 store as `runs.sqlite3` in `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copyfile(SCHEMA_2_STORE, data_dir / RUN_STORE_FILE))


def events_of(recording: Path) -> list[Event]:
    """The events of a shipped recording, encoded for the wire."""
    header, *lines = (json.loads(line) for line in recording.read_text().splitlines())
    return [
        Event.create(header["run_id"], e["seq"], e["event"], e["data"], t_ms=e["t_ms"])
        for e in lines
    ]


async def test_the_schema_2_store_upgrades_with_its_runs_events_owners_and_keys(
    tmp_path: Path,
) -> None:
    path = copy_of_schema_2(tmp_path)
    assert inspect(path)[:2] == (2, {"runs", "events", "api_keys"})
    completed = events_of(RECORDINGS / "builtin_completed.jsonl")
    cancelled = events_of(RECORDINGS / "builtin_cancelled.jsonl")
    mine, unowned = completed[0].run_id, cancelled[0].run_id

    log = await sqlite_log.open(path)
    try:
        first, second = await log.get_run(mine), await log.get_run(unowned)
        assert first is not None
        assert second is not None
        assert (first.owner, second.owner) == ("alice", None)
        assert await log.read(mine, after=0) == completed
        assert await log.read(unowned, after=0) == cancelled
        assert [r.id for r in await log.list_runs(limit=10, owner="alice")] == [mine]
        assert {r.id for r in await log.list_runs(limit=10)} == {mine, unowned}
        tails = await log.tails([mine, unowned])
        ends = {run_id: tail.end.status if tail.end else None for run_id, tail in tails.items()}
        assert ends == {mine: "completed", unowned: "cancelled"}
        assert await log.interrupted_runs() == []
    finally:
        await log.close()

    keys = SqliteKeys(path)
    try:
        assert [(k.name, k.admin, k.revoked_at) for k in keys.listing()] == [("alice", False, None)]
    finally:
        keys.close()
    # Adopted: the steps the earlier release applied are recorded, with no time; the
    # newer steps with the time they were applied.
    steps = recorded_steps(path)
    assert steps[:2] == [(step.version, step.name, None) for step in sqlite_schema.MIGRATIONS[:2]]
    assert [(v, n) for v, n, _ in steps[2:]] == [
        (step.version, step.name) for step in sqlite_schema.MIGRATIONS[2:]
    ]
    assert all(isinstance(when, float) for _, _, when in steps[2:])
    assert inspect(path)[0] == sqlite_schema.SCHEMA_VERSION


async def test_the_migrations_table_records_each_step_applied_with_its_name_and_time(
    tmp_path: Path,
) -> None:
    fresh = tmp_path / "fresh" / RUN_STORE_FILE
    await (await sqlite_log.open(fresh)).close()
    names = [(step.version, step.name) for step in sqlite_schema.MIGRATIONS]
    assert [(version, name) for version, name, _ in recorded_steps(fresh)] == names
    assert all(isinstance(when, float) for _, _, when in recorded_steps(fresh))

    old = tmp_path / "old" / RUN_STORE_FILE
    write_v1_store(old)
    outcome = sqlite_db.upgrade(old)
    assert (outcome.before, outcome.after, outcome.adopted) == (1, 6, (1,))
    assert [step.version for step in outcome.applied] == [2, 3, 4, 5, 6]
    (first, second, third, fourth, fifth, sixth) = recorded_steps(old)
    assert first == (1, "runs and their events", None)
    assert second[:2] == (2, "run owners and API keys")
    assert second[2] is not None
    assert third[:2] == (3, "webhook deliveries")
    assert third[2] is not None
    assert fourth[:2] == (4, "token events stored several to a row")
    assert fifth[:2] == (5, "ended sessions")
    assert sixth[:2] == (6, "when each run ended")

    # Nothing left to do the second time; the first record stays as it was.
    again = sqlite_db.upgrade(old)
    assert (again.before, again.after, again.applied, again.adopted) == (6, 6, (), ())
    assert recorded_steps(old) == [first, second, third, fourth, fifth, sixth]


def newer_store(data_dir: Path) -> Path:
    """A copy of the schema 2 store as a release with a schema 7 left it."""
    path = copy_of_schema_2(data_dir)
    sqlite_db.upgrade(path)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (7, 'from the future', 1.0)")
        db.execute("PRAGMA user_version = 7")
    return path


def digest(path: Path) -> str:
    """The file's contents, hashed: to show it was not written."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_a_store_migrated_by_a_newer_release_is_refused_and_left_untouched(
    tmp_path: Path,
) -> None:
    path = newer_store(tmp_path)
    before = (digest(path), recorded_steps(path))
    with pytest.raises(ConfigError) as refused:
        await sqlite_log.open(path)
    message = str(refused.value)
    assert f"{path} has schema version 7, newer than this release's 6" in message
    assert "upgrade research-service" in message
    assert (digest(path), recorded_steps(path)) == before

    finished = await cli_process.run("migrate", "--data-dir", str(tmp_path))
    assert finished.returncode == 2
    assert "newer than this release's 6; upgrade research-service" in finished.stderr
    assert (digest(path), recorded_steps(path)) == before


async def test_a_serving_store_migrated_by_a_newer_release_keeps_the_newer_version(
    tmp_path: Path,
) -> None:
    """The readiness probe rewrites the file's version as it is, not this release's."""
    path = copy_of_schema_2(tmp_path)
    log = await sqlite_log.open(path)
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
            db.execute(f"INSERT INTO {MIGRATIONS_TABLE} VALUES (7, 'from the future', 1.0)")
            db.execute("PRAGMA user_version = 7")
        await log.check()
    finally:
        await log.close()
    assert inspect(path)[0] == 7


async def test_migrate_applies_pending_steps_once_then_has_nothing_to_do(
    tmp_path: Path,
) -> None:
    old = tmp_path / "old"
    write_v1_store(old / RUN_STORE_FILE)
    first = await cli_process.run("migrate", "--store", "sqlite", "--data-dir", str(old))
    assert first.returncode == 0, first.stderr
    store = f"the run store {old / RUN_STORE_FILE}"
    assert first.stdout.splitlines() == [
        f"{store}: recorded schema 1 (applied by an earlier release)",
        f"{store}: schema 1 → 2: run owners and API keys",
        f"{store}: schema 2 → 3: webhook deliveries",
        f"{store}: schema 3 → 4: token events stored several to a row",
        f"{store}: schema 4 → 5: ended sessions",
        f"{store}: schema 5 → 6: when each run ended",
    ]
    second = await cli_process.run("migrate", "--data-dir", str(old))
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == [f"{store}: already at schema 6, nothing to apply"]

    shipped = tmp_path / "shipped"
    copy_of_schema_2(shipped)
    adopted = await cli_process.run("migrate", "--data-dir", str(shipped))
    assert adopted.returncode == 0, adopted.stderr
    store = f"the run store {shipped / RUN_STORE_FILE}"
    assert adopted.stdout.splitlines() == [
        f"{store}: recorded schema 1, 2 (applied by an earlier release)",
        f"{store}: schema 2 → 3: webhook deliveries",
        f"{store}: schema 3 → 4: token events stored several to a row",
        f"{store}: schema 4 → 5: ended sessions",
        f"{store}: schema 5 → 6: when each run ended",
    ]


async def test_migrate_makes_no_store_where_there_is_none(tmp_path: Path) -> None:
    finished = await cli_process.run("migrate", "--data-dir", str(tmp_path / "typo"))
    assert finished.returncode == 0
    assert finished.stdout == ""
    assert "no run store at" in finished.stderr
    assert not (tmp_path / "typo").exists()


async def test_migrate_works_while_a_service_serves_the_store(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    """It takes no store lock: SQLite's own locking (WAL) lets the two share the file."""
    data = tmp_path / "data"
    write_v1_store(data / RUN_STORE_FILE)
    service = await make_service(store="sqlite", auth="off")
    finished = await cli_process.run("migrate", "--data-dir", str(data))
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.endswith("already at schema 6, nothing to apply\n")
    listed = await client.get(service.url("/v1/runs"))
    assert listed.status_code == 200
    assert len(listed.json()["runs"]) == 1


def test_each_stores_migrations_are_numbered_in_order_named_and_additive() -> None:
    migrations.check(sqlite_schema.MIGRATIONS)
    migrations.check(postgres_db.MIGRATIONS)
    assert len(sqlite_schema.MIGRATIONS) == sqlite_schema.SCHEMA_VERSION


def every_migration() -> list[tuple[str, int, str]]:
    """(store, version, statement) of every SQL store's every step."""
    stores = {"sqlite": sqlite_schema.MIGRATIONS, "postgres": postgres_db.MIGRATIONS}
    return [
        (store, step.version, statement)
        for store, steps in stores.items()
        for step in steps
        for statement in step.statements
    ]


def test_no_migration_drops_or_deletes_data() -> None:
    for store, version, statement in every_migration():
        assert migrations.destructive(statement) is None, f"{store} {version}: {statement}"


@pytest.mark.parametrize(
    ("statement", "found"),
    [
        ("DROP TABLE runs", "DROP TABLE"),
        ("drop\n  table if exists events", "DROP TABLE"),
        ("ALTER TABLE runs DROP COLUMN owner", "DROP COLUMN"),
        ("ALTER TABLE runs DROP owner", "ALTER TABLE RUNS DROP OWNER"),
        ("DELETE FROM events WHERE seq > 3", "DELETE FROM"),
        ("TRUNCATE runs", "TRUNCATE"),
        ("CREATE TABLE e (r TEXT REFERENCES runs (id) ON DELETE CASCADE)", None),
        ("ALTER TABLE runs ALTER COLUMN owner DROP NOT NULL", None),
        ("ALTER TABLE runs ADD COLUMN dropped_at REAL", None),
    ],
)
def test_destructive_statements_are_found(statement: str, found: str | None) -> None:
    assert migrations.destructive(statement) == found


@pytest.mark.parametrize(
    ("steps", "complaint"),
    [
        ([(1, "a"), (3, "c")], "number 3, expected 2"),
        ([(2, "b")], "number 2, expected 1"),
        ([(1, "a"), (2, "")], "needs a name"),
    ],
)
def test_a_list_of_migrations_with_a_gap_or_no_name_is_refused(
    steps: list[tuple[int, str]], complaint: str
) -> None:
    listed = [migrations.Migration(version, name, ("SELECT 1",)) for version, name in steps]
    with pytest.raises(ValueError, match=complaint):
        migrations.check(listed)


def test_a_destructive_migration_is_refused() -> None:
    step = migrations.Migration(1, "tidy", ("CREATE TABLE t (a)", "drop\n  table runs"))
    with pytest.raises(ValueError, match="contains DROP TABLE"):
        migrations.check([step])


def test_the_plan_is_the_steps_not_yet_applied_in_order() -> None:
    steps = [migrations.Migration(n, f"step {n}", ("SELECT 1",)) for n in (1, 2, 3)]
    store = {"store": "the store", "flag": "--where"}
    assert [s.version for s in migrations.plan(steps, [], **store)] == [1, 2, 3]
    assert [s.version for s in migrations.plan(steps, [1], **store)] == [2, 3]
    assert migrations.plan(steps, [1, 2, 3], **store) == []
    with pytest.raises(ConfigError, match="records schema 3 but not schema 2 \\(step 2\\)"):
        migrations.plan(steps, [1, 3], **store)
    with pytest.raises(ConfigError, match="point --where elsewhere"):
        migrations.plan(steps, [1, 2, 3, 4], **store)


async def test_migrate_applies_the_postgres_stores_steps_once(postgres_url: str) -> None:
    flags = ("migrate", "--store", "postgres", "--database-url", postgres_url)
    first = await cli_process.run(*flags)
    assert first.returncode == 0, first.stderr
    store = "the PostgreSQL run store"
    steps = postgres_db.MIGRATIONS
    assert first.stdout.splitlines() == [f"{store}: {step.describe()}" for step in steps]
    second = await cli_process.run(*flags)
    assert second.returncode == 0, second.stderr
    assert second.stdout == f"{store}: already at schema {len(steps)}, nothing to apply\n"
