"""The `research-service` console script."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from aiohttp import web

from research_service import __version__
from research_service.app import create_app
from research_service.errors import ConfigError
from research_service.settings import Settings, env_name, field_type, flag_name, parse_value

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


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per Settings field, each naming its RESEARCH_* variable."""
    defaults = Settings()
    for f in fields(Settings):
        if f.metadata.get("secret"):
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
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def serve(settings: Settings) -> None:
    """Serve the API until interrupted."""
    _configure_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        handler_cancellation=True,
        print=lambda msg: logging.getLogger("research_service").info("%s", msg.strip()),
    )


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
    except ConfigError as exc:
        print(f"research-service: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
