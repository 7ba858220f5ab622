"""`research-service mcp`: the MCP server, over stdio (assistants launch it) or Streamable HTTP."""

from __future__ import annotations

import argparse
import logging
from typing import Any, Final

from research_service.addresses import is_loopback, url_host
from research_service.cli.catalogue import help_line
from research_service.cli.flags import say
from research_service.cli.following import run_command, usage
from research_service.cli.service_choice import (
    check_service_flags,
    chosen_service,
    in_process_flags,
    server_flag,
)
from research_service.errors import ClientError
from research_service.logs import configure_logging

#: Where `--http` listens unless told otherwise (the path is the SDK's: /mcp).
DEFAULT_HTTP_PORT: Final = 8090


def add_parser(commands: Any) -> None:
    """The `mcp` sub-command."""
    parser = commands.add_parser(
        "mcp",
        help=help_line("mcp"),
        description="An MCP server whose tools research questions on the service: `research` "
        "(follows the run, each phase a progress notification), `start_research`, "
        "`get_research` and `cancel_research`; resources research://runs/{id} and "
        "research://runs/{id}/answer; the `deep_research` prompt. Over stdio by default (the "
        "command an assistant launches), or Streamable HTTP with --http. Without --server it "
        "starts an in-process service on the embedded defaults, as `ask` does. See docs/mcp.md.",
    )
    server_flag(parser, "research")
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve MCP over Streamable HTTP at http://HOST:PORT/mcp instead of stdio "
        f"(e.g. 127.0.0.1:{DEFAULT_HTTP_PORT}; port 0 picks a free one, which it says)",
    )
    in_process_flags(parser)
    parser.set_defaults(run=run)


def _host_port(text: str) -> tuple[str, int]:
    """--http's HOST:PORT, on loopback only: the MCP endpoint asks its callers for no key."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or int(port) > 65535:
        raise ClientError(f"--http {text!r} is not HOST:PORT; try 127.0.0.1:{DEFAULT_HTTP_PORT}")
    host = host.strip("[]")
    if not is_loopback(host):
        raise ClientError(
            f"--http {text!r}: the MCP endpoint listens on loopback only (127.0.0.1, ::1), as "
            "it asks its callers for no key and runs research with --api-key's; reach it "
            "from elsewhere through a proxy that authenticates (docs/mcp.md)"
        )
    return host, int(port)


def run(args: argparse.Namespace) -> int:
    """`research-service mcp`."""
    try:
        check_service_flags(args)
        listen = _host_port(args.http) if args.http else None
    except ClientError as exc:
        return usage(str(exc))

    try:
        # The SDK and its web stack load only for this command (an optional extra).
        from research_service.mcp.event_store import RunEventStore  # noqa: PLC0415
        from research_service.mcp.http import listening, serve_http  # noqa: PLC0415
        from research_service.mcp.server import build_server  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name is None or not exc.name.startswith("mcp"):
            raise
        return usage(
            "the MCP server needs the mcp SDK: pip install 'research-service[mcp]' "
            "(or the test extra)"
        )

    # Bound before anything starts: a taken port is refused at once (exit status 2).
    sock = listening(*listen) if listen is not None else None

    async def main() -> int:

        # Logs go to stderr (over stdio, stdout carries the protocol and nothing else): the
        # MCP server's own lines (a resumed stream, a run it could not cancel), else warnings.
        configure_logging("WARNING")
        logging.getLogger("research_service.mcp").setLevel(logging.INFO)
        async with chosen_service(args) as (api, _):
            if sock is None:
                await build_server(api).run_stdio_async()
                return 0
            # A dropped client resumes with Last-Event-ID; what it missed is rebuilt from
            # the run's own events (docs/mcp.md).
            events = RunEventStore()
            host, port = sock.getsockname()[:2]
            say(f"MCP over Streamable HTTP at http://{url_host(host)}:{port}/mcp")
            await serve_http(build_server(api, events=events), events, sock)
        return 0

    return run_command(main())
