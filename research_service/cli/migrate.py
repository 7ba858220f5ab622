"""`research-service migrate`: apply the run store's pending schema migrations, and say which."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

from research_service.cli.flags import say, settings_flags, settings_from
from research_service.errors import ConfigError
from research_service.runs.migrations import Outcome
from research_service.runs.sqlite_db import RUN_STORE_FILE, upgrade
from research_service.settings import Settings

#: The flag of the PostgreSQL store's address, added here if Settings gives it none.
_DATABASE_URL = "--database-url"


def add_parser(commands: Any) -> None:
    """The `migrate` sub-command's flags."""
    migrate = commands.add_parser(
        "migrate",
        help="apply the run store's pending schema migrations",
        description="Bring the run store's schema up to this release, the steps it lacks in "
        "order, each in its own transaction, and print each step. `serve` does the same at "
        "start; run this to do it apart (before a deploy, say). Migrations only add: no data "
        "is dropped. A SQLite store may be migrated while a `serve` of it runs.",
    )
    settings_flags(migrate, only={"store", "data_dir", "database_url"})
    # Settings may give the flag already (as a secret, it may not): then this one is a clash.
    with contextlib.suppress(argparse.ArgumentError):
        migrate.add_argument(
            _DATABASE_URL,
            dest="database_url",
            default=None,
            help="the PostgreSQL run store's URL, with --store postgres "
            "(env RESEARCH_DATABASE_URL or DATABASE_URL)",
        )
    migrate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `migrate` with the flags given."""
    settings = settings_from(args)
    for line in migrate(settings, database_url=args.database_url):
        print(line, flush=True)
    return 0


def migrate(settings: Settings, *, database_url: str | None = None) -> list[str]:
    """Migrate the store `settings` name; what was done, one line per step."""
    if settings.store == "sqlite":
        path = settings.data_dir / RUN_STORE_FILE
        if not path.exists():
            say(f"no run store at {path}: nothing to migrate (serve makes a new one)")
            return []
        return upgrade(path).lines()
    if settings.store == "postgres":
        url = database_url or getattr(settings, "database_url", None)
        if not url:
            raise ConfigError(
                "--store postgres needs --database-url (RESEARCH_DATABASE_URL or DATABASE_URL)"
            )
        return asyncio.run(_migrate_postgres(str(url)))
    say(f"the {settings.store} store keeps nothing on disk: nothing to migrate")
    return []


async def _migrate_postgres(url: str) -> list[str]:
    # Imported here: asyncpg is needed only by PostgreSQL users.
    from research_service.runs import postgres_db  # noqa: PLC0415 - see above

    done: Any = await postgres_db.migrate(url)
    if isinstance(done, Outcome):
        return done.lines()
    store = "PostgreSQL run store"
    if not done:
        return [f"{store}: already at the newest schema, nothing to apply"]
    return [f"{store}: applied {step}" for step in done]
