"""`research-service ask`: start a run and follow it live (or as JSON Lines)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

from research_service.cli.api_key import api_key_flag, api_key_of
from research_service.cli.flags import say, settings_flags, settings_from
from research_service.cli.following import (
    DEFAULT_SERVER,
    EXIT_CODES_HELP,
    SERVER_ENV,
    http_session,
    output,
    output_flags,
    run_command,
    usage,
)
from research_service.client.api import ServiceClient
from research_service.client.lines import LineReader
from research_service.client.review import ReviewInput
from research_service.client.session import ask
from research_service.errors import ClientError
from research_service.logs import configure_logging

#: Settings of the in-process service `ask` starts when no --server is given.
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


def add_parser(commands: Any) -> None:
    """The `ask` sub-command."""
    ask_parser = commands.add_parser(
        "ask",
        help="research a question and watch it live",
        description="Start a research run and follow it: the phases, the searches, the "
        "sources and the answer as it is written. Without --server the run happens in an "
        "in-process service on the embedded defaults (builtin model, local search), so no "
        "server needs to be running; its runs end with the command. " + EXIT_CODES_HELP,
    )
    ask_parser.add_argument(
        "question", nargs="+", help="the question (several words are joined; - reads stdin)"
    )
    ask_parser.add_argument(
        "--server",
        metavar="URL",
        default=os.environ.get(SERVER_ENV),
        help=f"start the run on the service at URL, e.g. {DEFAULT_SERVER} (env {SERVER_ENV}; "
        "default: an in-process service)",
    )
    api_key_flag(ask_parser, "the --server's API key")
    for name, text in (
        ("breadth", "search queries to plan (1-8)"),
        ("max-sources", "sources kept for the answer (1-20)"),
        ("depth", "search rounds (1-3)"),
        ("max-tokens", "cap on the run's generated tokens"),
    ):
        ask_parser.add_argument(f"--{name}", type=int, metavar="N", help=text)
    ask_parser.add_argument(
        "--review",
        action="store_true",
        help="review the plan before the searches: the proposed queries are shown, and Enter "
        "(or a) approves them, e edits them, f gives feedback to plan again; answers are read "
        "from the terminal or stdin, or given from another shell with `research-service plan`",
    )
    output_flags(ask_parser)
    in_process = ask_parser.add_argument_group(
        "in-process service (without --server; as `serve`'s flags of the same name)"
    )
    settings_flags(in_process, only=IN_PROCESS_FLAGS)
    ask_parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`research-service ask`."""
    question = " ".join(args.question)
    from_stdin = question == "-"
    if from_stdin:
        question = sys.stdin.read()
    options: dict[str, Any] = {
        name: value
        for name in ("breadth", "max_sources", "depth", "max_tokens")
        if (value := getattr(args, name)) is not None
    }
    if args.review:
        options["review_plan"] = True
    given = sorted(f"--{n.replace('_', '-')}" for n in IN_PROCESS_FLAGS if getattr(args, n))
    if args.server and given:
        return usage(f"{', '.join(given)} set up the in-process service; drop them with --server")
    if args.api_key is not None and not args.server:
        return usage("--api-key is for a --server; the in-process service asks for no key")
    try:
        args.api_key = api_key_of(args) if args.server else None
    except ClientError as exc:
        return usage(str(exc))

    async def main() -> int:
        async with _service(args) as (api, in_process):
            out = output(args, in_process=in_process)
            if args.review:
                out.review = ReviewInput(_answers(stdin_used=from_stdin), sys.stderr)
            return await ask(api, question, options, out)

    return run_command(main())


@asynccontextmanager
async def _service(args: argparse.Namespace) -> AsyncIterator[tuple[ServiceClient, bool]]:
    """A client of --server, or of an in-process service started for this command."""
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


def _answers(*, stdin_used: bool) -> LineReader | None:
    """Where review decisions are read: stdin, else the terminal when stdin held the question."""
    if not stdin_used:
        try:
            return LineReader(sys.stdin.fileno())
        except (OSError, ValueError):  # stdin is closed
            pass
    try:
        terminal = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:  # no controlling terminal: decisions come from another shell
        return None
    return LineReader(terminal)
