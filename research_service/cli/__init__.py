"""The `research-service` console script: one module per sub-command (see `commands`).

This module imports nothing heavy, so a Ctrl-C while the sub-commands load (aiohttp, rich,
the service) ends the command quietly with 130, as one later does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import argparse

__all__ = ["build_parser", "main"]

#: 128 + SIGINT: interrupted by Ctrl-C.
EXIT_INTERRUPTED: Final = 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    from research_service.cli import commands  # noqa: PLC0415 -- loaded when used, see above

    return commands.build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    try:
        from research_service.cli import commands  # noqa: PLC0415 -- inside the Ctrl-C guard

        return commands.main(argv)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
