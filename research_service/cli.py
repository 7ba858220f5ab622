"""The `research-service` console script."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import math
import sqlite3
import sys
from collections.abc import Collection, Iterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from research_service import __version__
from research_service.app import RUN_STORE_FILE, create_app
from research_service.corpus.files import SUFFIXES
from research_service.corpus.indexer import index_folder, summary
from research_service.corpus.links import base_url
from research_service.corpus.progress import ProgressLine
from research_service.errors import ConfigError
from research_service.providers.local_search import corpus_index_path
from research_service.recordings.export import ExportError, download, from_store
from research_service.recordings.format import RecordingError
from research_service.recordings.replay import DEFAULT_SPEED, INSTANT, load_recordings, replay_app
from research_service.settings import Settings, env_name, field_type, flag_name, parse_value

EXIT_INTERRUPTED: Final = 130

# Defaults that are not a plain value, described in words for --help.
_DEFAULT_TEXT = {
    "data_dir": "the per-user data folder",
    "corpus": "the Python standard library's docs",
    "openai_base_url": "OpenAI's API, or $OPENAI_BASE_URL",
    "model": "gpt-4o-mini",
    "planner_model": "--model",
    "synth_model": "--model",
}


def _parse_flag(name: str, raw: str) -> Any:
    """Parse a flag for argparse: a bad value is a usage error (exit 2), not a traceback."""
    try:
        return parse_value(name, raw)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _env_names(name: str) -> str:
    aliases = next(f for f in fields(Settings) if f.name == name).metadata.get("aliases", ())
    return " or ".join((env_name(name), *aliases))


def _parse_base_url(raw: str) -> str:
    try:
        return base_url(raw)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _settings_flags(
    parser: argparse.ArgumentParser, *, only: Collection[str] | None = None
) -> None:
    """One `--flag` per Settings field (or per field named in `only`), naming its variable."""
    defaults = Settings()
    for f in fields(Settings):
        if f.metadata.get("secret") or (only is not None and f.name not in only):
            continue  # secrets come from the environment only: argv is visible to all
        kind = field_type(f.name)
        shown = _DEFAULT_TEXT.get(f.name, getattr(defaults, f.name))
        parser.add_argument(
            f"--{flag_name(f.name)}",
            dest=f.name,
            default=None,
            metavar=kind.__name__.upper() if kind is not str else None,
            choices=f.metadata.get("choices"),
            type=functools.partial(_parse_flag, f.name),
            help=f"{f.metadata['help']} (env {_env_names(f.name)}; default: {shown})",
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="research-service",
        description="Deep research (plan, search, synthesize) streamed over Server-Sent Events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service. Every flag can also be set by its RESEARCH_* "
        "environment variable; a flag wins over its variable.",
    )
    _settings_flags(serve)
    _index_parser(commands)
    _export_parser(commands)
    _replay_parser(commands)
    return parser


def _index_parser(commands: Any) -> None:
    """The `index` sub-command's flags."""
    kinds = ", ".join(sorted(SUFFIXES))
    index = commands.add_parser(
        "index",
        help="index a folder of documents for `serve --corpus`",
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
    _settings_flags(index, only={"data_dir"})
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


def _parse_speed(raw: str) -> float:
    try:
        speed = float(raw)
    except ValueError:
        speed = math.nan
    if not 0 < speed < math.inf:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a speed; pass a number > 0, e.g. 2")
    return speed


def _replay_parser(commands: Any) -> None:
    """The `replay` sub-command's flags."""
    replay = commands.add_parser(
        "replay",
        help="serve recorded runs through the HTTP API",
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
        type=_parse_speed,
        default=DEFAULT_SPEED,
        metavar="X",
        help=f"play at X times the recorded pace (default: {DEFAULT_SPEED:g})",
    )
    pace.add_argument(
        "--instant", action="store_true", help="every event is there from the first request"
    )
    _settings_flags(
        replay, only={"host", "port", "heartbeat_s", "retry_ms", "write_timeout_s", "log_level"}
    )


def replay(args: argparse.Namespace, settings: Settings) -> int:
    """Serve recordings until interrupted."""
    try:
        recordings = load_recordings(args.recordings)
    except RecordingError as exc:
        print(f"research-service: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    app = replay_app(settings, recordings, speed=INSTANT if args.instant else args.speed)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        handler_cancellation=True,
        print=lambda msg: logging.getLogger("research_service").info("%s", msg.strip()),
    )
    return 0


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


async def _freeze_startup_objects(app: web.Application) -> None:
    """Move what start-up built (imports, the providers) out of the collector's reach.

    Runs after the providers opened. Without it every full collection re-scans ~100,000
    long-lived objects (the openai, pydantic and HTTP client imports): 85-100 ms pauses in
    the middle of streams, measured by the relay benchmark.
    """
    gc.collect()
    gc.freeze()


def serve(settings: Settings) -> None:
    """Serve the API until interrupted."""
    _configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    app.on_startup.append(_freeze_startup_objects)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        handler_cancellation=True,
        print=lambda msg: logging.getLogger("research_service").info("%s", msg.strip()),
    )


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


def index(args: argparse.Namespace, settings: Settings) -> int:
    """Bring the index of a folder up to date; print what changed."""
    folder: Path = args.corpus.expanduser()
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        print(f"research-service: {folder} {problem}; pass the folder to index", file=sys.stderr)
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
        print("research-service: interrupted; the index is as it was", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, sqlite3.Error) as exc:
        progress.clear()
        print(
            f"research-service: cannot update the index {db} ({exc}); if `serve` is indexing "
            "the same folder, wait for it, else delete the file to rebuild it",
            file=sys.stderr,
        )
        return 1
    progress.clear()
    print(summary(result))
    return 0


def _export_parser(commands: Any) -> None:
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
    _settings_flags(export, only={"data_dir"})


def export(args: argparse.Namespace, settings: Settings) -> int:
    """Write the recording of a finished run to a file or stdout."""
    try:
        if args.server is not None:
            text = asyncio.run(download(args.server, args.run_id))
        else:
            text = asyncio.run(from_store(settings.data_dir / RUN_STORE_FILE, args.run_id))
    except ExportError as exc:
        print(f"research-service: {exc}", file=sys.stderr)
        return 2
    if args.output in (None, "-"):
        sys.stdout.flush()
        sys.stdout.buffer.write(text.encode())
        sys.stdout.buffer.flush()
        return 0
    try:
        Path(args.output).write_bytes(text.encode())
    except OSError as exc:
        print(f"research-service: cannot write {args.output} ({exc.strerror})", file=sys.stderr)
        return 1
    print(
        f"research-service: wrote the recording of run {args.run_id} to {args.output}",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {
        f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)
    }
    try:
        settings = Settings.from_env(**overrides)
        if args.command == "serve":
            serve(settings)
        elif args.command == "index":
            return index(args, settings)
        elif args.command == "export":
            return export(args, settings)
        elif args.command == "replay":
            return replay(args, settings)
    except ConfigError as exc:
        print(f"research-service: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
