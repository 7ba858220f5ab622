"""A throwaway PostgreSQL database per test module, and a fresh schema in it per test.

The server is the one on 127.0.0.1:5432 (user postgres, trust auth; `.ci/run` starts
Debian's when none answers), or RESEARCH_TEST_POSTGRES_URL. Without one the tests skip
with the reason, except under CI=true, where they fail: CI must test the Postgres store.

The fixtures are synchronous (their asyncpg work runs in a thread of its own), so the
event-log contract suite can ask for them lazily, from inside its async fixtures.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import secrets
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

#: The server's maintenance database; throwaway databases are made and dropped from it.
SERVER_URL: Final = os.environ.get(
    "RESEARCH_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
T = TypeVar("T")


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a loop of its own, in another thread."""

    async def main() -> T:
        return await make()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result()


def with_database(url: str, name: str, **query: str) -> str:
    """`url` pointing at database `name`, with extra query parameters (server settings)."""
    parts = urlsplit(url)
    extra = "&".join(f"{key}={value}" for key, value in query.items())
    return urlunsplit(parts._replace(path=f"/{name}", query=extra))


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _unavailable(exc: BaseException) -> None:
    reason = f"no PostgreSQL server at {SERVER_URL} ({exc!r}); start one or set " + (
        "RESEARCH_TEST_POSTGRES_URL"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run the PostgreSQL store's tests")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """The URL of a new database (random name), dropped with everything in it after the module."""
    name = f"research_test_{secrets.token_hex(6)}"
    try:
        _run(lambda: _execute(SERVER_URL, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        _unavailable(exc)
    try:
        yield with_database(SERVER_URL, name)
    finally:
        _run(lambda: _execute(SERVER_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def postgres_url(postgres_database: str) -> str:
    """A URL whose connections see only a fresh, empty schema of the module's database."""
    schema = f"t_{secrets.token_hex(6)}"
    _run(lambda: _execute(postgres_database, f'CREATE SCHEMA "{schema}"'))
    # asyncpg passes unknown query parameters to the server as settings.
    return with_database(
        SERVER_URL, urlsplit(postgres_database).path.lstrip("/"), search_path=schema
    )


def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """The rows of one query, run on a connection of its own (for a test's assertions)."""

    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return _run(fetch)
