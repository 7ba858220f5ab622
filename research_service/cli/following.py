"""What `ask` and `listen` share: the output flags, the display, the HTTP session, exits."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

import aiohttp
from rich.console import Console

from research_service import __version__
from research_service.cli.flags import positive_number, say
from research_service.client.follow import DEFAULT_GIVE_UP_S
from research_service.client.live import LiveDisplay
from research_service.client.output import silence, stdout
from research_service.client.plain import JsonLines, PlainText
from research_service.client.session import EXIT_INTERRUPTED, EXIT_USAGE, Output
from research_service.client.text import Display
from research_service.defaults import DEFAULT_PORT
from research_service.errors import ClientError

#: The service `listen` (and `ask --server` without a URL) talks to unless told otherwise.
SERVER_ENV: Final = "RESEARCH_SERVER"
DEFAULT_SERVER: Final = f"http://127.0.0.1:{DEFAULT_PORT}"
#: 128 + SIGPIPE, as a shell reports a writer whose reader went away.
EXIT_BROKEN_PIPE: Final = 141
#: 128 + SIGTERM: stopped as by Ctrl-C (detached, or cancelled with --cancel-on-exit).
EXIT_TERMINATED: Final = 143


def exit_codes_help(refused: str) -> str:
    """The exit statuses `ask` and `listen` share; `refused`: what the service may refuse."""
    return (
        "Exit status: 0 the run completed, 1 it failed, 2 usage error or the service refused "
        f"the request ({refused}, a missing or refused API key), 3 it was cancelled, 4 the "
        "service could not be reached (or stayed unreachable too long, or is not a "
        "research-service), 130 interrupted (Ctrl-C), 141 stdout was closed, 143 stopped by "
        "SIGTERM (as Ctrl-C)."
    )


def output_flags(parser: argparse.ArgumentParser) -> None:
    """How the run is shown, recorded and left: the flags `ask` and `listen` share."""
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


def http_session() -> aiohttp.ClientSession:
    """The client's HTTP session; its User-Agent names the client in the service's access log."""
    return aiohttp.ClientSession(headers={"User-Agent": f"research-service/{__version__}"})


def output(args: argparse.Namespace, *, in_process: bool = False) -> Output:
    """Where and how the events go: a live display, plain text or JSON Lines.

    OutputFailed when stdout is closed: nothing could be shown, so nothing is started.
    """
    out = stdout()
    display: Display
    if args.json:
        display = JsonLines(out)
    elif args.quiet or args.plain or not out.stream.isatty():
        display = PlainText(out, quiet=args.quiet, notify=say)
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


def run_command(main: Coroutine[Any, Any, int], *, follows_a_run: bool = False) -> int:
    """Run the command's coroutine; map Ctrl-C, client errors and stdout to exits.

    A command that `follows_a_run` (`ask`, `listen`) takes SIGTERM as Ctrl-C: its display
    gives the terminal back and it says how to follow the run again.
    """
    try:
        return asyncio.run(_until_terminated(main) if follows_a_run else main)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except ClientError as exc:
        return fail(exc)
    except BrokenPipeError:
        # The reader of stdout went away (`| head`): stop quietly, as other tools do.
        if sys.stdout is not None:
            silence(sys.stdout)
        return EXIT_BROKEN_PIPE


async def _until_terminated(main: Coroutine[Any, Any, int]) -> int:
    """Run `main`; SIGTERM cancels it as Ctrl-C does (the display ends, the run is left)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await main
    except asyncio.CancelledError:
        if not terminated:
            raise
        return EXIT_TERMINATED
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def fail(exc: ClientError) -> int:
    """Say why the command cannot go on; its exit status."""
    say(str(exc))
    return exc.exit_code


def usage(message: str) -> int:
    """Say what was wrong with the command line; the usage exit status."""
    say(message)
    return EXIT_USAGE


def run_target_flags(parser: argparse.ArgumentParser) -> None:
    """The run a command is about (`RUN_ID|URL`) and `--server`, for `listen` and `plan`."""
    parser.add_argument(
        "target",
        metavar="RUN_ID|URL",
        help="a run id (on --server), a run's URL such as http://host:8080/v1/runs/ID/events, "
        "or a panel link http://host:8080/?run=ID",
    )
    parser.add_argument(
        "--server",
        metavar="URL",
        # Set but empty is unset, as for ask.
        default=os.environ.get(SERVER_ENV) or DEFAULT_SERVER,
        help=f"the service that has the run (env {SERVER_ENV}; default: {DEFAULT_SERVER})",
    )
