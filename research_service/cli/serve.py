"""`research-service serve`: the HTTP service until interrupted."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from aiohttp import web

from research_service.auth import key_file
from research_service.cli.catalogue import help_line
from research_service.cli.flags import make_data_dir, settings_flags, settings_from
from research_service.errors import ConfigError
from research_service.logs import configure_logging
from research_service.settings import Settings


def add_parser(commands: Any) -> None:
    """The `serve` sub-command: every Settings field is a flag."""
    serve = commands.add_parser(
        "serve",
        help=help_line("serve"),
        description="Run the HTTP service. Every flag can also be set by its RESEARCH_* "
        "environment variable; a flag wins over its variable.",
    )
    settings_flags(serve)
    serve.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Serve the API until interrupted."""
    serve(settings_from(args))
    return 0


def serve(settings: Settings) -> None:
    """Serve the API on `settings` until interrupted."""
    from research_service.app import create_app  # noqa: PLC0415 - keeps `listen` quick to start

    configure_logging(settings.log_level, settings.log_format)
    make_data_dir(settings.data_dir)
    checked = None
    if settings.auth_mode == "off" and settings.api_keys_file is not None:
        # Else the service would start open to everyone, the keys file checked by nobody.
        raise ConfigError(
            "--api-keys-file is given but auth is off (--auth off, or a loopback --host "
            "without --auth): add --auth keys to ask for the keys, or drop --api-keys-file"
        )
    if settings.auth_mode == "keys" and settings.api_keys_file is not None:
        # Said now, not after the search index is built (minutes for a large --corpus); read
        # once: the service starts with the very keys checked here.
        checked = key_file.check(settings.api_keys_file, store_keys=settings.store == "sqlite")
    app = create_app(settings, keys_file=checked)
    run_app(app, settings)


def run_app(app: web.Application, settings: Settings) -> None:
    """Serve `app` on the settings' host and port until SIGTERM or SIGINT."""
    from research_service.web import serving  # noqa: PLC0415 - keeps `listen` quick to start

    asyncio.run(serving.serve(app, settings))
