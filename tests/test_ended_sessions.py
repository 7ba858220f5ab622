"""The ended-sessions contract, run against every backend: memory, a SQLite file, PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from research_service.auth.ended_sessions import EndedSessions, MemoryEndedSessions
from research_service.auth.ended_sessions_postgres import PostgresEndedSessions
from research_service.auth.ended_sessions_sqlite import SqliteEndedSessions
from research_service.auth.sign_outs import SignOuts
from research_service.auth.tokens import SessionGrant, new_session_id
from research_service.runs import postgres_db, sqlite_log
from research_service.runs.sqlite_db import RUN_STORE_FILE
from tests import postgres

BACKENDS = ["memory", "sqlite", "postgres"]
# A database for the module, a schema per test: asked for only by the postgres cases.
postgres_database = postgres.postgres_database
postgres_url = postgres.postgres_url


@pytest.fixture(params=BACKENDS)
async def ended(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EndedSessions]:
    store: EndedSessions
    if request.param == "memory":
        store = MemoryEndedSessions()
        yield store
    elif request.param == "sqlite":
        store = SqliteEndedSessions(tmp_path / RUN_STORE_FILE)
        try:
            yield store
        finally:
            await store.close()
    else:
        pool = await postgres_db.open_pool(str(request.getfixturevalue("postgres_url")))
        try:
            yield PostgresEndedSessions(pool)
        finally:
            await pool.close()


async def test_an_ended_session_is_known_until_its_expiry_then_purged(
    ended: EndedSessions,
) -> None:
    now = int(time.time())
    past, soon, later, never_ended = (new_session_id() for _ in range(4))
    assert await ended.ended([past, soon, later]) == set()
    await ended.end(past, expires=now - 1)
    await ended.end(soon, expires=now + 60)
    await ended.end(later, expires=now + 3600)
    assert await ended.ended([past, soon, later, never_ended]) == {past, soon, later}
    assert await ended.ended([]) == set()

    assert await ended.purge(now=now) == 1
    assert await ended.ended([past, soon, later]) == {soon, later}
    assert await ended.purge(now=now + 61) == 1
    assert await ended.ended([past, soon, later]) == {later}
    assert await ended.purge(now=now + 61) == 0


async def test_ending_twice_keeps_the_later_expiry(ended: EndedSessions) -> None:
    now = int(time.time())
    session_id = new_session_id()
    await ended.end(session_id, expires=now + 3600)
    await ended.end(session_id, expires=now + 10)
    assert await ended.purge(now=now + 11) == 0
    assert await ended.ended([session_id]) == {session_id}


async def test_many_ids_are_asked_at_once(ended: EndedSessions) -> None:
    """More ids than one statement binds (SQLite is asked in chunks)."""
    expires = int(time.time()) + 60
    ids = [new_session_id() for _ in range(1200)]
    for session_id in ids[::7]:
        await ended.end(session_id, expires=expires)
    assert await ended.ended(ids) == set(ids[::7])


async def test_the_sqlite_table_outlives_its_connection_and_sits_in_the_run_store(
    tmp_path: Path,
) -> None:
    path = tmp_path / RUN_STORE_FILE
    session_id = new_session_id()
    first = SqliteEndedSessions(path)
    await first.end(session_id, expires=int(time.time()) + 60)
    await first.close()
    # The run store opens the same file, at the same schema, beside them.
    store = await sqlite_log.open(path)
    await store.close()
    second = SqliteEndedSessions(path)
    try:
        assert await second.ended([session_id]) == {session_id}
    finally:
        await second.close()


async def test_sign_outs_cut_the_watchers_of_a_session_ended_elsewhere() -> None:
    """Two processes on one store: a sign-out in one cuts the other's open requests."""
    store = MemoryEndedSessions()
    here, there = SignOuts(store), SignOuts(store)
    grant = SessionGrant("file-000000000000", new_session_id(), int(time.time()) + 60)
    other = SessionGrant("file-000000000000", new_session_id(), int(time.time()) + 60)
    cut: list[str] = []
    there.watch(grant.session_id, lambda: cut.append("signed out"))
    unwatch = there.watch(other.session_id, lambda: cut.append("other"))
    await here.end(grant)
    assert cut == []  # not told yet: the other process learns at its next check
    assert await there.has_ended(grant)  # a new request there is refused at once...
    assert cut == ["signed out"]  # ...and the open ones are cut with it
    await there.recheck()
    assert cut == ["signed out"]
    unwatch()
    assert not await there.has_ended(other)


async def test_a_recheck_cuts_what_a_session_ended_elsewhere_has_open() -> None:
    store = MemoryEndedSessions()
    here, there = SignOuts(store), SignOuts(store)
    grant = SessionGrant("file-000000000000", new_session_id(), int(time.time()) + 60)
    cut: list[str] = []
    there.watch(grant.session_id, lambda: cut.append("cut"))
    await here.end(grant)
    await there.recheck()
    assert cut == ["cut"]
    await there.recheck()
    assert cut == ["cut"]


async def test_a_request_watched_just_after_its_session_ended_here_is_cut() -> None:
    """The request's check passed, then the sign-out came (it found nobody to tell), then the
    request began to watch: it is cut at the loop's next turn, not left open for ever."""
    sign_outs = SignOuts(MemoryEndedSessions())
    grant = SessionGrant("file-000000000000", new_session_id(), int(time.time()) + 60)
    assert not await sign_outs.has_ended(grant)  # the request's check
    await sign_outs.end(grant)  # the sign-out, before the request watches
    cut = asyncio.Event()
    sign_outs.watch(grant.session_id, cut.set)
    async with asyncio.timeout(5):
        await cut.wait()
    await sign_outs.recheck()  # and nothing is left watching
    other = SessionGrant("file-000000000000", new_session_id(), int(time.time()) + 60)
    assert not await sign_outs.has_ended(other)
