"""`--store postgres` against a real server: runs outlive the process, listings by owner,
interrupted runs ended at start, retention, recordings, readiness, and refusals that say why."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from research_service.errors import ConfigError, StoreUnavailable
from research_service.events import Event
from research_service.recording import parse_recording
from research_service.runs import postgres_db, postgres_log
from research_service.runs.models import RunRecord
from research_service.settings import Settings
from research_service.web.health import CHECK_TIMEOUT_S
from tests import postgres
from tests.conftest import MakeService
from tests.drop_proxy import DropProxy
from tests.loopback import refused_port
from tests.sse import listen

postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url

ALICE, BOB, ROOT = ("alice-secret-" + "a" * 32, "bob-secret-" + "b" * 32, "root-secret-" + "r" * 32)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_runs_stream_and_read_back_the_same_after_a_restart(
    make_service: MakeService, client: httpx.AsyncClient, postgres_url: str
) -> None:
    first = await make_service(store="postgres", database_url=postgres_url)
    run_ids = [await first.create(client, f"Question {n}?") for n in range(3)]
    before = [await listen(client, first.url(f"/v1/runs/{i}/events")) for i in run_ids]
    await first.server.close()

    second = await make_service(store="postgres", database_url=postgres_url)
    listing = (await client.get(second.url("/v1/runs"))).json()
    after = [await listen(client, second.url(f"/v1/runs/{i}/events")) for i in run_ids]
    snapshot = (await client.get(second.url(f"/v1/runs/{run_ids[0]}"))).json()
    assert [run["id"] for run in listing["runs"]] == run_ids[::-1]
    assert [got.ids for got in after] == [got.ids for got in before]
    assert [[e.data for e in got.events] for got in after] == [
        [e.data for e in got.events] for got in before
    ]
    assert after[0].names[-1] == "done"
    assert snapshot["status"] == "completed"
    assert snapshot["answer"] == before[0].last[1]["answer"]


async def test_events_are_in_postgres_once_the_done_is_seen(
    make_service: MakeService, client: httpx.AsyncClient, postgres_url: str
) -> None:
    service = await make_service(store="postgres", database_url=postgres_url)
    run_id = await service.create(client)
    streamed = await listen(client, service.url(f"/v1/runs/{run_id}/events"))
    rows = postgres.query(
        postgres_url, "SELECT seq, name FROM events WHERE run_id = $1 ORDER BY seq", run_id
    )
    assert [(row["seq"], row["name"]) for row in rows] == list(enumerate(streamed.names, start=1))


async def test_listings_show_each_key_its_own_runs_and_an_admin_all(
    make_service: MakeService, client: httpx.AsyncClient, postgres_url: str, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{ALICE}\nbob:{BOB}\nroot:{ROOT}:admin\n")
    service = await make_service(
        store="postgres", database_url=postgres_url, auth="keys", api_keys_file=keys
    )
    made: dict[str, list[str]] = {"alice": [], "bob": []}
    for n in range(3):
        for name, key in (("alice", ALICE), ("bob", BOB)):
            created = await client.post(
                service.url("/v1/runs"), json={"question": f"{name} {n}?"}, headers=bearer(key)
            )
            assert created.status_code == 201, created.text
            made[name].append(created.json()["id"])

    async def listed(key: str) -> list[str]:
        """Every run the key may see, page by page (two a page)."""
        seen: list[str] = []
        params = {"limit": "2"}
        while True:
            response = await client.get(service.url("/v1/runs"), params=params, headers=bearer(key))
            assert response.status_code == 200, response.text
            body = response.json()
            seen += [run["id"] for run in body["runs"]]
            if body["next"] is None:
                return seen
            params = {"limit": "2", "before": body["next"]}

    assert await listed(ALICE) == made["alice"][::-1]
    assert await listed(BOB) == made["bob"][::-1]
    assert sorted(await listed(ROOT)) == sorted(made["alice"] + made["bob"])


async def test_keys_come_only_from_a_keys_file_with_the_postgres_store(
    make_service: MakeService, postgres_url: str
) -> None:
    with pytest.raises(ConfigError, match=r"--store postgres they come only from --api-keys-file"):
        await make_service(store="postgres", database_url=postgres_url, auth="keys")


async def test_a_run_a_stopped_process_left_open_ends_failed_at_the_next_start(
    make_service: MakeService, client: httpx.AsyncClient, postgres_url: str
) -> None:
    store = await postgres_log.open(postgres_url)
    record = RunRecord("0123456789abcdef", "left open?")
    await store.create_run(record)
    started = {"phase": "planning", "status": "started", "elapsed_ms": 0}
    await store.append(Event.create(record.id, 1, "phase", started, t_ms=0))
    await store.close()

    service = await make_service(store="postgres", database_url=postgres_url)
    got = await listen(client, service.url(f"/v1/runs/{record.id}/events"))
    assert got.names == ["phase", "error", "done"]
    assert got.data(1)["code"] == "interrupted"
    assert got.last[1]["status"] == "failed"


async def test_finished_runs_past_the_retention_limits_are_deleted_at_start(
    make_service: MakeService, client: httpx.AsyncClient, postgres_url: str
) -> None:
    store = await postgres_log.open(postgres_url)
    done = {"status": "completed", "answer": "", "timings_ms": {"total": 1}}
    old = RunRecord("a" * 16, "old?", created_at=time.time() - 40 * 86400)
    recent = RunRecord("b" * 16, "recent?", created_at=time.time() - 60)
    for record in (old, recent):
        await store.create_run(record)
        await store.append(Event.create(record.id, 1, "done", done, t_ms=1))
    await store.close()

    service = await make_service(store="postgres", database_url=postgres_url, retention_days=30)
    # The first pruning runs in the background as the service starts.
    for _ in range(100):
        if (await client.get(service.url(f"/v1/runs/{old.id}"))).status_code == 404:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the old run was not pruned within 5 s")
    listing = (await client.get(service.url("/v1/runs"))).json()
    assert [run["id"] for run in listing["runs"]] == [recent.id]
    assert postgres.query(postgres_url, "SELECT run_id FROM events WHERE run_id = $1", old.id) == []


async def test_the_recording_of_a_stored_run_is_served_after_a_restart(
    make_service: MakeService, client: httpx.AsyncClient, postgres_url: str
) -> None:
    first = await make_service(store="postgres", database_url=postgres_url)
    run_id = await first.create(client, "What is recorded?")
    streamed = await listen(client, first.url(f"/v1/runs/{run_id}/events"))
    await first.server.close()

    second = await make_service(store="postgres", database_url=postgres_url)
    response = await client.get(second.url(f"/v1/runs/{run_id}/recording"))
    assert response.status_code == 200
    recording = parse_recording(response.text)
    assert recording.record().question == "What is recorded?"
    assert [e.event for e in recording.events] == streamed.names
    assert [e.data for e in recording.events] == [json.loads(e.data) for e in streamed.events]


async def test_export_reads_a_finished_run_from_the_postgres_store(
    make_service: MakeService, client: httpx.AsyncClient, postgres_url: str
) -> None:
    service = await make_service(store="postgres", database_url=postgres_url)
    run_id = await service.create(client, "What is exported?")
    await listen(client, service.url(f"/v1/runs/{run_id}/events"))
    served = await client.get(service.url(f"/v1/runs/{run_id}/recording"))
    await service.server.close()

    async def export(*args: str, env: dict[str, str] | None = None) -> tuple[int, bytes, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "research_service",
            "export",
            *args,
            env={k: v for k, v in os.environ.items() if not k.startswith("RESEARCH_")}
            | (env or {}),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode is not None
        return process.returncode, out, err.decode()

    code, stdout, stderr = await export(
        run_id, "--store", "postgres", "--database-url", postgres_url
    )
    assert (code, stderr) == (0, "")
    assert stdout == served.content
    # The URL may come from the environment; a missing one is named, an unknown run too.
    code, stdout, _ = await export(
        run_id, "--store", "postgres", env={"DATABASE_URL": postgres_url}
    )
    assert (code, stdout) == (0, served.content)
    code, _, stderr = await export(run_id, "--store", "postgres")
    assert code == 2
    assert "--database-url" in stderr
    unknown = "0123456789abcdef"
    code, _, stderr = await export(unknown, "--store", "postgres", "--database-url", postgres_url)
    assert code == 2
    assert f"no run {unknown} in the PostgreSQL run store" in stderr


async def test_readiness_checks_the_postgres_store(
    make_service: MakeService, client: httpx.AsyncClient, postgres_url: str
) -> None:
    service = await make_service(store="postgres", database_url=postgres_url)
    response = await client.get(service.url("/readyz"))
    assert response.status_code == 200, response.text
    assert response.json()["checks"]["store"] == {"status": "ok"}


@pytest.fixture
async def silenceable() -> AsyncIterator[DropProxy]:
    """A proxy in front of PostgreSQL that can go silent (set up before the service, so it is
    closed after it)."""
    proxy = DropProxy("127.0.0.1", 5432)
    await proxy.start()
    yield proxy
    proxy.speak()
    await proxy.close()


async def test_readiness_answers_in_time_while_the_database_is_silent(
    silenceable: DropProxy, make_service: MakeService, client: httpx.AsyncClient, postgres_url: str
) -> None:
    """A database that stops answering (a blackholed route): `/readyz` says so within its
    check's 5 s, rather than after the cancelled query has unwound (15 s, once)."""
    url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{silenceable.port}")
    service = await make_service(store="postgres", database_url=url)
    assert (await client.get(service.url("/readyz"))).status_code == 200
    silenceable.go_silent()
    async with asyncio.timeout(CHECK_TIMEOUT_S + 3):
        response = await client.get(service.url("/readyz"), timeout=60)
    assert response.status_code == 503
    said = response.json()["checks"]["store"]["error"]
    assert f"did not answer within {CHECK_TIMEOUT_S:g} s" in said
    silenceable.speak()  # and ready again, once its connections answer
    async with asyncio.timeout(30):
        while (await client.get(service.url("/readyz"), timeout=60)).status_code != 200:  # noqa: ASYNC110 - an HTTP answer has no event
            await asyncio.sleep(0.2)


async def test_the_postgres_store_without_a_url_refuses_to_start_saying_what_to_set(
    make_service: MakeService,
) -> None:
    with pytest.raises(ConfigError, match=r"set --database-url \(RESEARCH_DATABASE_URL or "):
        await make_service(store="postgres")


async def test_an_unreachable_database_refuses_to_start_with_the_reason(
    make_service: MakeService,
) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{refused_port()}/research"
    with pytest.raises(ConfigError, match=r"cannot use the PostgreSQL run store") as failed:
        await make_service(store="postgres", database_url=url)
    assert "hunter2" not in str(failed.value)
    assert "postgres:***@127.0.0.1" in str(failed.value)


def test_the_database_url_is_read_from_either_variable_and_hidden_in_repr() -> None:
    url = "postgresql://u:hunter2@db/research"
    assert Settings.from_env({"DATABASE_URL": url}).database_url == url
    ours = Settings.from_env({"RESEARCH_DATABASE_URL": url, "DATABASE_URL": "other"})
    assert ours.database_url == url
    assert "hunter2" not in repr(ours)


async def test_migrate_applies_each_step_once_and_records_it(postgres_url: str) -> None:
    assert await postgres_db.migrate(postgres_url) == [
        "schema 0 → 1: runs and events",
        "schema 1 → 2: executions (cluster mode)",
        "schema 2 → 3: webhook deliveries",
        "schema 3 → 4: ended sessions",
        "schema 4 → 5: when each run ended",
    ]
    assert await postgres_db.migrate(postgres_url) == []
    rows = postgres.query(postgres_url, "SELECT version, name FROM schema_migrations")
    assert sorted(tuple(row) for row in rows) == [
        (1, "runs and events"),
        (2, "executions (cluster mode)"),
        (3, "webhook deliveries"),
        (4, "ended sessions"),
        (5, "when each run ended"),
    ]


async def test_a_schema_1_database_is_upgraded_and_its_runs_read_back(postgres_url: str) -> None:
    """A database an early release made (schema 1) gains the later tables, nothing lost, and
    the end of each finished run is recorded (schema 5), so the open ones are found by it."""
    first = postgres_db.MIGRATIONS[0]
    postgres.query(postgres_url, postgres_db._LEDGER)
    for statement in first.statements:
        postgres.query(postgres_url, statement)
    postgres.query(
        postgres_url,
        "INSERT INTO schema_migrations (version, name) VALUES (1, 'runs and events')",
    )
    record = RunRecord("0123456789abcdef", "from the last release?", owner="alice")
    postgres.query(
        postgres_url,
        "INSERT INTO runs (id, question, options, created_at, owner) "
        f"VALUES ('{record.id}', '{record.question}', '{{}}', 1.0, 'alice'), "
        "('fedcba9876543210', 'left open', '{}', 2.0, NULL)",
    )
    postgres.query(
        postgres_url,
        "INSERT INTO events (run_id, seq, name, t_ms, wire) VALUES "
        f"('{record.id}', 1, 'phase', 3, ''), ('{record.id}', 2, 'done', 1500, ''), "
        "('fedcba9876543210', 1, 'phase', 4, '')",
    )
    assert await postgres_db.migrate(postgres_url) == [
        "schema 1 → 2: executions (cluster mode)",
        "schema 2 → 3: webhook deliveries",
        "schema 3 → 4: ended sessions",
        "schema 4 → 5: when each run ended",
    ]
    ends = postgres.query(postgres_url, "SELECT id, ended_at FROM runs ORDER BY id")
    assert [tuple(row) for row in ends] == [(record.id, 2.5), ("fedcba9876543210", None)]
    store = await postgres_log.open(postgres_url)
    try:
        got = await store.get_run(record.id)
        assert got is not None
        assert (got.question, got.owner) == (record.question, "alice")
        assert [r.id for r in await store.interrupted_runs()] == ["fedcba9876543210"]
        listed = await store.list_runs(limit=10, unfinished=True)
        assert [r.id for r in listed] == ["fedcba9876543210"]
    finally:
        await store.close()
    assert postgres.query(postgres_url, "SELECT count(*) FROM executions")[0][0] == 0
    assert postgres.query(postgres_url, "SELECT count(*) FROM webhook_deliveries")[0][0] == 0


async def test_processes_starting_at_once_migrate_once(postgres_url: str) -> None:
    applied = await asyncio.gather(*(postgres_db.migrate(postgres_url) for _ in range(4)))
    assert sorted(map(len, applied)) == [0, 0, 0, len(postgres_db.MIGRATIONS)]


async def test_events_wait_in_memory_while_writes_fail_and_the_done_lands_after(
    postgres_url: str,
) -> None:
    """A server refusing writes (here a trigger raising disk_full) loses nothing."""
    store = await postgres_log.open(postgres_url)
    try:
        record = RunRecord("0123456789abcdef", "through a full disk?")
        await store.create_run(record)
        postgres.query(
            postgres_url,
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'no space' USING ERRCODE = 'disk_full'; END $$",
        )
        postgres.query(
            postgres_url,
            "CREATE TRIGGER refuse BEFORE INSERT ON events EXECUTE FUNCTION refuse()",
        )
        await store.append(Event.create(record.id, 1, "token", {"text": "kept"}, t_ms=1))
        done = Event.create(record.id, 2, "done", {"status": "completed"}, t_ms=2)
        ending = asyncio.create_task(store.append(done))
        for _ in range(100):
            if store.write_failure is not None:
                break
            await asyncio.sleep(0.05)
        assert store.write_failure is not None
        assert store.write_failure.slug == "storage-full"
        with pytest.raises(StoreUnavailable, match="disk is full"):
            await store.check()
        assert not ending.done()
        # No run starts meanwhile, even where its row would fit: its events could not follow.
        with pytest.raises(StoreUnavailable, match="disk is full"):
            await store.create_run(RunRecord("fedcba9876543210", "refused meanwhile?"))
        # Readers see what is appended, but not a done that is not committed.
        assert [e.name for e in await store.read(record.id, after=0)] == ["token"]

        postgres.query(postgres_url, "DROP TRIGGER refuse ON events")
        async with asyncio.timeout(5):
            await ending
        assert store.write_failure is None
        await store.check()
        rows = postgres.query(postgres_url, "SELECT name FROM events ORDER BY seq")
        assert [row["name"] for row in rows] == ["token", "done"]
    finally:
        await store.close()


async def test_a_read_only_primary_is_not_ready_and_says_why(postgres_url: str) -> None:
    """`default_transaction_read_only` on a primary: /readyz said ready (it is no standby)
    while every run was refused, and the log swung between "stopped" and "takes writes"."""
    store = await postgres_log.open(postgres_url)  # the schema, made while writes are taken
    await store.close()
    store = await postgres_log.open(f"{postgres_url}&default_transaction_read_only=on")
    try:
        with pytest.raises(StoreUnavailable, match=r"read-only \(default_transaction_read_only"):
            await store.check()
    finally:
        await store.close()


async def test_a_schema_migrations_table_of_another_tool_is_refused_in_one_line(
    postgres_url: str,
) -> None:
    """Rails keeps text versions in a table of the same name: a TypeError's traceback once."""
    postgres.query(postgres_url, "CREATE TABLE schema_migrations (version varchar PRIMARY KEY)")
    postgres.query(postgres_url, "INSERT INTO schema_migrations VALUES ('20240101120000')")
    with pytest.raises(ConfigError, match="schema_migrations table of another tool"):
        await postgres_log.open(postgres_url)


async def test_another_process_s_tails_say_which_runs_await_a_plan_review(
    postgres_url: str,
) -> None:
    """The server reads the last event: a run waiting for its review says so in listings."""
    writer = await postgres_log.open(postgres_url)
    reader = await postgres_log.open(postgres_url, shared=True)
    try:
        waiting = RunRecord("0123456789abcdef", "review me?")
        running = RunRecord("fedcba9876543210", "just go?")
        for record in (waiting, running):
            await writer.create_run(record)
            started = {"phase": "planning", "status": "started", "elapsed_ms": 0}
            await writer.append(Event.create(record.id, 1, "phase", started, t_ms=0))
        review = {"phase": "planning", "status": "review", "queries": ["a"], "round": 1}
        await writer.append(Event.create(waiting.id, 2, "phase", review, t_ms=1))
        await writer.flush()
        tails = await reader.tails([waiting.id, running.id])
        assert tails[waiting.id].awaiting == "plan_review"
        assert tails[waiting.id].event_count == 2
        assert tails[running.id].awaiting is None
    finally:
        await reader.close()
        await writer.close()


async def test_nothing_is_stored_after_a_run_s_end_not_even_by_its_stalled_executor(
    postgres_url: str,
) -> None:
    """A cluster's executor stalls for longer than a lease; another node ends its run
    `worker_lost` (`error`, `done`). The executor comes back and writes on: its events once
    went in after that `done`, with a second `done`, and the run read back `completed`."""
    executor = await postgres_log.open(postgres_url)
    sweeper = await postgres_log.open(postgres_url, shared=True)
    reader = await postgres_log.open(postgres_url, shared=True)
    record = RunRecord("0123456789abcdef", "who ends it?")
    try:
        await executor.create_run(record)
        for seq in (1, 2, 3):
            await executor.append(Event.create(record.id, seq, "token", {"text": "x"}, t_ms=seq))
        await executor.flush()
        lost = {"code": "worker_lost", "message": "its executor stopped answering"}
        await sweeper.append(Event.create(record.id, 4, "error", lost, t_ms=40))
        done = {"status": "failed", "answer": "xxx", "error": lost, "timings_ms": {"total": 50}}
        await sweeper.append(Event.create(record.id, 5, "done", done, t_ms=50))
        await sweeper.flush()
        ended = postgres.query(postgres_url, "SELECT ended_at FROM runs")[0]["ended_at"]

        for seq in range(4, 9):  # 4 and 5 collide with the ending; 6-8 would follow it
            await executor.append(Event.create(record.id, seq, "token", {"text": "y"}, t_ms=seq))
        completed = {"status": "completed", "answer": "xxxyyyyy", "timings_ms": {"total": 90}}
        await executor.append(Event.create(record.id, 9, "done", completed, t_ms=90))
        await executor.flush()

        stored = await reader.read(record.id, after=0)
        assert [(e.seq, e.name) for e in stored] == [
            (1, "token"), (2, "token"), (3, "token"), (4, "error"), (5, "done")
        ]  # fmt: skip
        assert stored[-1].data["status"] == "failed"
        assert postgres.query(postgres_url, "SELECT ended_at FROM runs")[0]["ended_at"] == ended
    finally:
        await reader.close()
        await sweeper.close()
        await executor.close()


async def test_a_connection_goes_back_to_the_pool_without_a_reset_round_trip(
    postgres_url: str,
) -> None:
    """The store keeps no session state, so a release sends nothing; an open transaction
    is still rolled back before the connection serves anyone else."""
    pool = await postgres_db.open_pool(postgres_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            await conn.execute("CREATE TABLE left_open (n integer)")
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO left_open VALUES (1)")
        # The server's record of the backend's last statement: asyncpg's own ROLLBACK,
        # not its default reset (`SELECT pg_advisory_unlock_all(); ... RESET ALL;`).
        last = postgres.query(
            postgres_url, "SELECT state, query FROM pg_stat_activity WHERE pid = $1", backend
        )
        assert [(row["state"], row["query"]) for row in last] == [("idle", "ROLLBACK")]
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT pg_backend_pid()") == backend
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM left_open") == 0
    finally:
        await pool.close()
