"""Every sub-command of the console script (one module each), and how it runs one."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from research_service import __version__
from research_service.cli.catalogue import COMMANDS
from research_service.cli.flags import say
from research_service.errors import ConfigError, StoreUnavailable

#: Exit status of a usage or configuration error (argparse's own).
EXIT_USAGE = 2


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser of every sub-command.

    Given the command line `argv`, only the sub-command it names is loaded and given its
    flags; the others are listed by name and help line, so a command starts without loading
    the modules (and libraries) of the others. Without `argv`, every sub-command is loaded.
    """
    parser = argparse.ArgumentParser(
        prog="research-service",
        description="Deep research (plan, search, synthesize) streamed over Server-Sent Events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    named = None if argv is None else _named(argv)
    for name, (module, line) in COMMANDS.items():
        if argv is None or name == named:
            importlib.import_module(f"research_service.cli.{module}").add_parser(commands)
        else:
            commands.add_parser(name, help=line)
    return parser


def _named(argv: Sequence[str]) -> str | None:
    """The sub-command `argv` names: its first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), None)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    words = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(words).parse_args(words)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        say(str(exc))
        return EXIT_USAGE
    except StoreUnavailable as exc:
        # A store that cannot be used at start (read-only, its folder unreadable) is refused
        # as a bad setting is: one line that says what to fix (a client's "retry" left out).
        say(exc.cause)
        return EXIT_USAGE
