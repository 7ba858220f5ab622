"""`--server URL` or an in-process service: how `ask` and `mcp` find the service they use."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

from research_service.cli.api_key import api_key_flag, api_key_of
from research_service.cli.flags import say, settings_flags, settings_from
from research_service.cli.following import DEFAULT_SERVER, SERVER_ENV, http_session
from research_service.client.api import ServiceClient
from research_service.client.urls import check_server
from research_service.errors import ClientError
from research_service.logs import configure_logging

#: Settings of the in-process service started when no --server is given.
IN_PROCESS_FLAGS: Final = frozenset(
    {
        "data_dir",
        "corpus",
        "llm",
        "search",
        "model",
        "openai_base_url",
        "searxng_url",
        "token_delay_ms",
        "max_tokens_per_run",
        "review_timeout_s",
    }
)
IN_PROCESS_GROUP: Final = (
    "in-process service (without --server; as `serve`'s flags of the same name)"
)


def server_flag(parser: argparse.ArgumentParser, what: str) -> None:
    """`--server URL` (`what` the command does there) and its `--api-key`."""
    parser.add_argument(
        "--server",
        metavar="URL",
        default=os.environ.get(SERVER_ENV),
        help=f"{what} on the service at URL, e.g. {DEFAULT_SERVER} (env {SERVER_ENV}; "
        "default: an in-process service)",
    )
    api_key_flag(parser, "the --server's API key")


def in_process_flags(parser: argparse.ArgumentParser) -> None:
    """The in-process service's settings, as `serve`'s flags of the same name."""
    settings_flags(parser.add_argument_group(IN_PROCESS_GROUP), only=IN_PROCESS_FLAGS)


def check_service_flags(args: argparse.Namespace) -> None:
    """ClientError for flags that do not go together or a bad --server; sets `args.api_key`."""
    if args.server:
        check_server(args.server, flag=server_source(args.server))
    # Given at all, whatever the value: `--token-delay-ms 0` would not apply either.
    given = sorted(
        f"--{n.replace('_', '-')}" for n in IN_PROCESS_FLAGS if getattr(args, n) is not None
    )
    if args.server and given:
        raise ClientError(
            f"{', '.join(given)} set up the in-process service; drop them with --server"
        )
    if args.api_key is not None and not args.server:
        raise ClientError("--api-key is for a --server; the in-process service asks for no key")
    args.api_key = api_key_of(args) if args.server else None


def server_source(server: str) -> str:
    """Where a --server value came from, for a message: the flag, or its variable."""
    return SERVER_ENV if os.environ.get(SERVER_ENV) == server else "--server"


@asynccontextmanager
async def chosen_service(args: argparse.Namespace) -> AsyncIterator[tuple[ServiceClient, bool]]:
    """A client of --server, or of an in-process service started for this command (True)."""
    async with http_session() as session:
        if args.server:
            yield ServiceClient(session, args.server, notify=say, api_key=args.api_key), False
            return
        # The service's modules (the openai SDK among them) load only when one is started here.
        from research_service.cli.local import local_service  # noqa: PLC0415

        settings = settings_from(args)
        configure_logging("WARNING", settings.log_format)
        say("starting an in-process service (the first start indexes its corpus)")
        async with local_service(settings) as url:
            yield ServiceClient(session, url, notify=say), True
