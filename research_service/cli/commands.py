"""Every sub-command of the console script (one module each), and how it runs one."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from research_service import __version__
from research_service.cli import (
    ask,
    export,
    index,
    keys,
    listen,
    mcp,
    migrate,
    plan,
    replay,
    serve,
    webhook_secret,
    worker,
)
from research_service.cli.flags import say
from research_service.errors import ConfigError

#: Exit status of a usage or configuration error (argparse's own).
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="research-service",
        description="Deep research (plan, search, synthesize) streamed over Server-Sent Events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_parser(commands)
    ask.add_parser(commands)
    listen.add_parser(commands)
    plan.add_parser(commands)
    index.add_parser(commands)
    export.add_parser(commands)
    replay.add_parser(commands)
    keys.add_parser(commands)
    migrate.add_parser(commands)
    worker.add_parser(commands)
    webhook_secret.add_parser(commands)
    mcp.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        say(str(exc))
        return EXIT_USAGE
