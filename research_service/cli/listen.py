"""`research-service listen`: follow an existing run live (or as JSON Lines)."""

from __future__ import annotations

import argparse
from typing import Any

from research_service.cli.api_key import api_key_flag, api_key_of
from research_service.cli.catalogue import help_line
from research_service.cli.flags import say
from research_service.cli.following import (
    exit_codes_help,
    fail,
    http_session,
    output,
    output_flags,
    run_command,
    run_target_flags,
    usage,
)
from research_service.cli.service_choice import server_source
from research_service.client.api import ServiceClient
from research_service.client.session import listen, parse_target
from research_service.errors import ClientError


def add_parser(commands: Any) -> None:
    """The `listen` sub-command."""
    listen_parser = commands.add_parser(
        "listen",
        help=help_line("listen"),
        description="Follow a run from its first event to its end: live while it runs, or "
        "the whole of it at once when it has finished. " + exit_codes_help("an unknown run"),
    )
    run_target_flags(listen_parser)
    api_key_flag(listen_parser, "the service's API key (the one that started the run)")
    output_flags(listen_parser)
    listen_parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`research-service listen`."""
    try:
        server, run_id = parse_target(args.target, args.server, flag=server_source(args.server))
        api_key = api_key_of(args)
    except ClientError as exc:
        return usage(str(exc))
    try:
        out = output(args)  # before any request: a closed stdout stops it here
    except ClientError as exc:
        return fail(exc)

    async def main() -> int:
        async with http_session() as session:
            api = ServiceClient(session, server, notify=say, api_key=api_key)
            return await listen(api, run_id, out)

    return run_command(main(), follows_a_run=True)
