"""`research-service export RUN_ID`: write the recording of a finished run."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from research_service.cli.api_key import api_key_flag, api_key_of
from research_service.cli.flags import say, settings_flags, settings_from
from research_service.errors import ClientError
from research_service.recordings.export import (
    ExportError,
    download,
    from_postgres,
    from_store,
)
from research_service.runs.sqlite_log import RUN_STORE_FILE
from research_service.settings import Settings


def add_parser(commands: Any) -> None:
    """The `export` sub-command's flags."""
    export = commands.add_parser(
        "export",
        help="write the recording of a finished run",
        description="Write the recording of a finished run (JSON Lines, see docs/recordings.md), "
        "read from the run store a `serve --store sqlite` keeps in the data folder, or "
        "downloaded from a running service with --server.",
    )
    export.add_argument("run_id", metavar="RUN_ID", help="the run's id")
    export.add_argument(
        "-o", "--output", metavar="FILE", help="file to write (default, or -: stdout)"
    )
    export.add_argument(
        "--server",
        metavar="URL",
        help="download from the service at URL (e.g. http://127.0.0.1:8080) instead",
    )
    api_key_flag(export, "the --server's API key, when it runs with --auth keys")
    settings_flags(export, only={"data_dir", "store", "database_url"})
    export.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `export` with the flags given."""
    return export(args, settings_from(args))


def export(args: argparse.Namespace, settings: Settings) -> int:
    """Write the recording of a finished run to a file or stdout."""
    try:
        if args.server is not None:
            text = asyncio.run(download(args.server, args.run_id, api_key=api_key_of(args)))
        elif settings.store == "postgres":
            if settings.database_url is None:
                raise ExportError(
                    "--store postgres needs the database: set --database-url or "
                    "RESEARCH_DATABASE_URL (or DATABASE_URL)"
                )
            text = asyncio.run(from_postgres(settings.database_url, args.run_id))
        else:
            text = asyncio.run(from_store(settings.data_dir / RUN_STORE_FILE, args.run_id))
    except (ExportError, ClientError) as exc:
        say(str(exc))
        return 2
    if args.output in (None, "-"):
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode())
        sys.stdout.buffer.flush()
        return 0
    try:
        Path(args.output).write_bytes(text.encode())
    except OSError as exc:
        say(f"cannot write {args.output} ({exc.strerror})")
        return 1
    say(f"wrote the recording of run {args.run_id} to {args.output}")
    return 0
