"""`research-service export RUN_ID`: write the recording of a finished run."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from research_service.cli.api_key import api_key_flag, api_key_of
from research_service.cli.catalogue import help_line
from research_service.cli.flags import say, settings_flags, settings_from
from research_service.cli.following import EXIT_BROKEN_PIPE
from research_service.client.output import Sink, silence, stdout
from research_service.client.urls import check_server
from research_service.errors import ClientError, OutputFailed
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
        help=help_line("export"),
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
    to_stdout = args.output in (None, "-")
    try:
        if args.server is not None:
            check_server(args.server)
        out = stdout() if to_stdout else None  # a closed stdout: said before any work
    except ClientError as exc:
        say(str(exc))
        return exc.exit_code
    try:
        text = asyncio.run(_recording(args, settings))
    except (ExportError, ClientError) as exc:
        say(str(exc))
        return exc.exit_code
    if out is not None:
        return _to_stdout(out, text)
    try:
        Path(args.output).write_bytes(text.encode())
    except OSError as exc:
        say(f"cannot write {args.output} ({exc.strerror})")
        return 1
    say(f"wrote the recording of run {args.run_id} to {args.output}")
    return 0


async def _recording(args: argparse.Namespace, settings: Settings) -> str:
    """The recording, from --server, the PostgreSQL run store or the SQLite one."""
    if args.server is not None:
        return await download(args.server, args.run_id, api_key=api_key_of(args))
    if settings.store == "postgres":
        if settings.database_url is None:
            raise ExportError(
                "--store postgres needs the database: set --database-url or "
                "RESEARCH_DATABASE_URL (or DATABASE_URL)"
            )
        return await from_postgres(settings.database_url, args.run_id)
    return await from_store(settings.data_dir / RUN_STORE_FILE, args.run_id)


def _to_stdout(out: Sink, text: str) -> int:
    """Write the recording's bytes to stdout: 0, else 1 saying why (141 when it is `| head`)."""
    stream = out.stream
    try:
        stream.flush()
        stream.buffer.write(text.encode())  # the bytes, whatever the locale's encoding
        stream.buffer.flush()
    except BrokenPipeError:
        silence(stream)
        return EXIT_BROKEN_PIPE
    except (OSError, ValueError) as exc:
        silence(stream)  # what is still buffered would fail again at exit
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        say(f"could not write the recording to stdout ({reason})")
        return OutputFailed.exit_code
    return 0
