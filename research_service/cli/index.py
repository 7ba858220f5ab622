"""`research-service index DIR`: bring a folder's search index up to date."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from research_service.cli.catalogue import help_line
from research_service.cli.flags import say, settings_flags, settings_from
from research_service.corpus.files import SUFFIXES
from research_service.corpus.index import update_failure
from research_service.corpus.indexer import index_folder, summary
from research_service.corpus.links import base_url
from research_service.corpus.progress import ProgressLine
from research_service.errors import ConfigError
from research_service.providers.local_search import corpus_index_path
from research_service.settings import Settings

EXIT_INTERRUPTED: Final = 130


def _parse_base_url(raw: str) -> str:
    try:
        return base_url(raw)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(commands: Any) -> None:
    """The `index` sub-command's flags."""
    kinds = ", ".join(sorted(SUFFIXES))
    index = commands.add_parser(
        "index",
        help=help_line("index"),
        description=f"Index the {kinds} files under DIR for the local search provider. Only "
        "changed files are read again, and deleted files leave the index. `serve --corpus DIR` "
        "with the same data folder then starts without reading the folder again. Progress goes "
        "to stderr, the summary to stdout.",
    )
    index.add_argument("corpus", metavar="DIR", type=Path, help="folder to index")
    index.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="index file (default: the one `serve --corpus DIR` uses, in the data folder)",
    )
    settings_flags(index, only={"data_dir"})
    links = index.add_mutually_exclusive_group()
    links.add_argument(
        "--base-url",
        type=_parse_base_url,
        metavar="URL",
        help="link results to their DIR-relative path under URL, e.g. https://docs.example.org/ "
        "(stored in the index, so `serve` links the same way; default: the stored one, else "
        "file:// URLs)",
    )
    links.add_argument(
        "--file-urls", action="store_true", help="forget a stored --base-url: link to the files"
    )
    index.add_argument(
        "-q", "--quiet", action="store_true", help="no progress, only warnings and the summary"
    )
    index.set_defaults(run=run)


@contextlib.contextmanager
def _command_logging(handler: logging.Handler) -> Iterator[None]:
    """Warnings (a skipped file, say) go to `handler` while a command runs."""
    root, pypdf = logging.getLogger(), logging.getLogger("pypdf")
    handler.setLevel(logging.WARNING)
    # pypdf warns about every repairable flaw of a file; only what it cannot repair matters.
    pypdf_level = pypdf.level
    pypdf.setLevel(logging.ERROR)
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        pypdf.setLevel(pypdf_level)


def run(args: argparse.Namespace) -> int:
    """Run `index` with the flags given."""
    return index(args, settings_from(args))


def index(args: argparse.Namespace, settings: Settings) -> int:
    """Bring the index of a folder up to date; print what changed."""
    folder: Path = args.corpus.expanduser()
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        say(f"{folder} {problem}; pass the folder to index")
        return 2
    db: Path = args.db if args.db is not None else corpus_index_path(settings)
    progress = ProgressLine(sys.stderr, label=f"indexing {folder}")
    if args.quiet:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    else:
        handler = progress.log_handler()
    try:
        with _command_logging(handler):
            result = index_folder(
                folder,
                db=db,
                base_url="" if args.file_urls else args.base_url,
                progress=None if args.quiet else progress,
            )
    except KeyboardInterrupt:
        progress.clear()
        say("interrupted; the index is as it was")
        return EXIT_INTERRUPTED
    except (OSError, sqlite3.Error) as exc:
        progress.clear()
        say(update_failure(db, exc))
        return 1
    progress.clear()
    print(summary(result))
    return 0
