"""`research-service replay FILE...`: serve recorded runs through the HTTP API."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

from research_service.cli.catalogue import help_line
from research_service.cli.flags import (
    positive_number,
    say,
    settings_flags,
    settings_from,
)
from research_service.cli.serve import run_app
from research_service.logs import configure_logging
from research_service.recording import RecordingError
from research_service.replay_app import DEFAULT_SPEED, INSTANT, load_recordings, replay_app
from research_service.settings import Settings


def add_parser(commands: Any) -> None:
    """The `replay` sub-command's flags."""
    replay = commands.add_parser(
        "replay",
        help=help_line("replay"),
        description="Serve the runs recorded in FILE... (made by `research-service export` or "
        "GET /v1/runs/{id}/recording) through the same HTTP API and event stream as `serve`, "
        "under their recorded run ids, so event ids match the recording. Each run plays from "
        "when the server starts, at its recorded pace times --speed; a listener that comes "
        "later gets what has been played, then the rest live, and resumes with Last-Event-ID "
        "as usual. Nothing new runs: creating a run (POST /v1/runs, or GET /v1/research "
        "without Last-Event-ID) or cancelling one answers 409 problem+json `replay-only`. "
        "A file that is not a valid recording stops the command with its line and why (exit 2).",
    )
    replay.add_argument("recordings", metavar="FILE", type=Path, nargs="+", help="a recording")
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument(
        "--speed",
        type=functools.partial(positive_number, what="a speed", example="2"),
        default=DEFAULT_SPEED,
        metavar="X",
        help=f"play at X times the recorded pace (default: {DEFAULT_SPEED:g})",
    )
    pace.add_argument(
        "--instant", action="store_true", help="every event is there from the first request"
    )
    settings_flags(
        replay,
        only={
            "host",
            "port",
            "allowed_hosts",
            "cors_origins",
            "heartbeat_s",
            "retry_ms",
            "write_timeout_s",
            "log_level",
            "log_format",
        },
    )
    replay.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run `replay` with the flags given."""
    return replay(args, settings_from(args))


def replay(args: argparse.Namespace, settings: Settings) -> int:
    """Serve recordings until interrupted."""
    for path in args.recordings:
        if path.exists() and not path.is_file():
            # A FIFO or a device would be read forever; a folder cannot be read at all.
            say(f"{path} is not a regular file; pass a recording made by `research-service export`")
            return 2
    try:
        recordings = load_recordings(args.recordings)
    except RecordingError as exc:
        say(str(exc))
        return 2
    configure_logging(settings.log_level, settings.log_format)
    app = replay_app(settings, recordings, speed=INSTANT if args.instant else args.speed)
    run_app(app, settings)
    return 0
