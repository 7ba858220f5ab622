"""`research-service ask` and `listen`: follow a run live in the terminal, or as JSON Lines."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import aiohttp
from rich.console import Console

from research_service import __version__
from research_service.cli.api_key import api_key_flag, api_key_of
from research_service.cli.flags import (
    configure_logging,
    positive_number,
    say,
    settings_flags,
    settings_from,
)
from research_service.client.api import ServiceClient
from research_service.client.follow import DEFAULT_GIVE_UP_S
from research_service.client.live import LiveDisplay
from research_service.client.plain import JsonLines, PlainText
from research_service.client.session import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Output,
    ask,
    listen,
    parse_target,
)
from research_service.client.text import Display
from research_service.errors import ClientError
from research_service.settings import DEFAULT_PORT

#: The service `listen` (and `ask --server` without a URL) talks to unless told otherwise.
SERVER_ENV: Final = "RESEARCH_SERVER"
DEFAULT_SERVER: Final = f"http://127.0.0.1:{DEFAULT_PORT}"
#: 128 + SIGPIPE, as a shell reports a writer whose reader went away.
EXIT_BROKEN_PIPE: Final = 141
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
    }
)
EXIT_CODES_HELP: Final = (
    "A 429 (too many runs) is tried again after its Retry-After, a few times. Exit status: "
    "0 the run completed, 1 it failed, 2 usage error or the service refused the request "
    "(a bad question, an unknown run, a missing or refused API key), "
    "3 it was cancelled, 4 the service could not be reached (or stayed unreachable too long, "
    "or is not a research-service), 130 interrupted (Ctrl-C), 141 stdout was closed."
)


def add_parsers(commands: Any) -> None:
    """The `ask` and `listen` sub-commands."""
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
    _output_flags(ask_parser)
    in_process = ask_parser.add_argument_group(
        "in-process service (without --server; as `serve`'s flags of the same name)"
    )
    settings_flags(in_process, only=IN_PROCESS_FLAGS)
    ask_parser.set_defaults(run=run_ask)

    listen_parser = commands.add_parser(
        "listen",
        help="follow an existing run",
        description="Follow a run from its first event to its end: live while it runs, or "
        "the whole of it at once when it has finished. " + EXIT_CODES_HELP,
    )
    listen_parser.add_argument(
        "target",
        metavar="RUN_ID|URL",
        help="a run id (on --server), a run's URL such as http://host:8080/v1/runs/ID/events, "
        "or a panel link http://host:8080/?run=ID",
    )
    listen_parser.add_argument(
        "--server",
        metavar="URL",
        default=os.environ.get(SERVER_ENV, DEFAULT_SERVER),
        help=f"the service that has the run (env {SERVER_ENV}; default: {DEFAULT_SERVER})",
    )
    api_key_flag(listen_parser, "the service's API key (the one that started the run)")
    _output_flags(listen_parser)
    listen_parser.set_defaults(run=run_listen)


def _output_flags(parser: argparse.ArgumentParser) -> None:
    shown = parser.add_mutually_exclusive_group()
    shown.add_argument(
        "--json",
        action="store_true",
        help='one JSON object per event per line ({"id", "event", "data"}), nothing else on '
        "stdout; messages go to stderr",
    )
    shown.add_argument(
        "--plain", action="store_true", help="a plain-text transcript even on a terminal"
    )
    shown.add_argument(
        "-q", "--quiet", action="store_true", help="plain text: only the answer and its sources"
    )
    parser.add_argument(
        "--record", type=Path, metavar="FILE", help="write the run's recording to FILE as it goes"
    )
    parser.add_argument(
        "--cancel-on-exit",
        action="store_true",
        help="Ctrl-C cancels the run (by default it only detaches: the run goes on)",
    )
    parser.add_argument(
        "--give-up-after",
        type=functools.partial(positive_number, what="a number of seconds", example="60"),
        metavar="S",
        default=DEFAULT_GIVE_UP_S,
        help="stop reconnecting after S seconds without the service "
        f"(default: {DEFAULT_GIVE_UP_S:g})",
    )


def run_ask(args: argparse.Namespace) -> int:
    """`research-service ask`."""
    question = " ".join(args.question)
    if question == "-":
        question = sys.stdin.read()
    options = {
        name: value
        for name in ("breadth", "max_sources", "depth", "max_tokens")
        if (value := getattr(args, name)) is not None
    }
    given = sorted(f"--{n.replace('_', '-')}" for n in IN_PROCESS_FLAGS if getattr(args, n))
    if args.server and given:
        return _usage(f"{', '.join(given)} set up the in-process service; drop them with --server")
    if args.api_key is not None and not args.server:
        return _usage("--api-key is for a --server; the in-process service asks for no key")
    try:
        args.api_key = api_key_of(args) if args.server else None
    except ClientError as exc:
        return _usage(str(exc))

    async def main() -> int:
        async with _service(args) as (api, in_process):
            return await ask(api, question, options, _output(args, in_process=in_process))

    return _run(main())


def run_listen(args: argparse.Namespace) -> int:
    """`research-service listen`."""
    try:
        server, run_id = parse_target(args.target, args.server)
        api_key = api_key_of(args)
    except ClientError as exc:
        return _usage(str(exc))

    async def main() -> int:
        async with _session() as session:
            api = ServiceClient(session, server, notify=say, api_key=api_key)
            return await listen(api, run_id, _output(args))

    return _run(main())


@asynccontextmanager
async def _service(args: argparse.Namespace) -> AsyncIterator[tuple[ServiceClient, bool]]:
    """A client of --server, or of an in-process service started for this command."""
    async with _session() as session:
        if args.server:
            yield ServiceClient(session, args.server, notify=say, api_key=args.api_key), False
            return
        # The service's modules (the openai SDK among them) load only when one is started here.
        from research_service.client.local import local_service  # noqa: PLC0415

        settings = settings_from(args)
        configure_logging("WARNING")
        say("starting an in-process service (the first start indexes its corpus)")
        async with local_service(settings) as url:
            yield ServiceClient(session, url, notify=say), True


def _session() -> aiohttp.ClientSession:
    """The client's HTTP session; its User-Agent names the client in the service's access log."""
    return aiohttp.ClientSession(headers={"User-Agent": f"research-service/{__version__}"})


def _output(args: argparse.Namespace, *, in_process: bool = False) -> Output:
    display: Display
    if args.json:
        display = JsonLines(sys.stdout)
    elif args.quiet or args.plain or not sys.stdout.isatty():
        display = PlainText(sys.stdout, quiet=args.quiet)
    else:
        display = LiveDisplay(Console(highlight=False))
    return Output(
        display=display,
        notify=say,
        record=args.record,
        cancel_on_exit=args.cancel_on_exit,
        give_up_after_s=args.give_up_after,
        in_process=in_process,
    )


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run the command's coroutine; map Ctrl-C, client errors and a closed stdout to exits."""
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ClientError as exc:
        say(str(exc))
        return exc.exit_code
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): stop quietly, as other tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _usage(message: str) -> int:
    say(message)
    return EXIT_USAGE
