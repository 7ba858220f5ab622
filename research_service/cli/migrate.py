"""`research-service migrate`: apply the run store's pending schema migrations, and say which."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from research_service.cli.catalogue import help_line
from research_service.cli.flags import existing_data_dir, say, settings_flags, settings_from
from research_service.errors import ConfigError
from research_service.runs.migrations import latest
from research_service.runs.sqlite_db import RUN_STORE_FILE, upgrade
from research_service.settings import Settings


def add_parser(commands: Any) -> None:
    """The `migrate` sub-command's flags."""
    migrate = commands.add_parser(
        "migrate",
        help=help_line("migrate"),
        description="Bring the run store's schema up to this release, the steps it lacks in "
        "order (a step that fails is undone whole), and print each step. `serve` does the same at "
        "start; run this to do it apart (before a deploy, say). Migrations only add: no data "
        "is dropped. A SQLite store may be migrated while a `serve` of it runs; a --data-dir with "
        "no store makes none, and one that is no folder is refused.",
    )
    settings_flags(migrate, only={"store", "data_dir", "database_url"})
    migrate.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `migrate` with the flags given."""
    settings = settings_from(args)
    for line in migrate(settings):
        print(line, flush=True)
    return 0


def migrate(settings: Settings) -> list[str]:
    """Migrate the store `settings` name; what was done, one line per step."""
    if settings.store == "sqlite":
        path = _run_store(settings.data_dir)
        if path is None:
            where = settings.data_dir / RUN_STORE_FILE
            say(f"no run store at {where}: nothing to migrate (serve makes a new one)")
            return []
        return upgrade(path).lines()
    if settings.store == "postgres":
        url = settings.database_url
        if not url:
            raise ConfigError(
                "--store postgres needs --database-url (RESEARCH_DATABASE_URL or DATABASE_URL)"
            )
        return asyncio.run(_migrate_postgres(url))
    say(f"the {settings.store} store keeps nothing on disk: nothing to migrate")
    return []


def _run_store(data_dir: Path) -> Path | None:
    """The SQLite run store in `data_dir`, None when there is none; ConfigError if unreadable."""
    if not existing_data_dir(data_dir):
        return None
    path = data_dir / RUN_STORE_FILE
    try:
        path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the data folder {data_dir} ({exc.strerror}); run as the service's "
            "user, or point --data-dir (RESEARCH_DATA_DIR) at a folder this user may read"
        ) from None
    return path


async def _migrate_postgres(url: str) -> list[str]:
    # Imported here: asyncpg is needed only by PostgreSQL users.
    from research_service.runs import postgres_db  # noqa: PLC0415 - see above

    done = await postgres_db.migrate(url)
    store = postgres_db.STORE_NAME
    if not done:
        return [f"{store}: already at schema {latest(postgres_db.MIGRATIONS)}, nothing to apply"]
    return [f"{store}: {step}" for step in done]
