"""`research-service ask`: start a run and follow it live (or as JSON Lines)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from research_service.cli.catalogue import help_line
from research_service.cli.following import (
    exit_codes_help,
    fail,
    output,
    output_flags,
    run_command,
    usage,
)
from research_service.cli.service_choice import (
    check_service_flags,
    chosen_service,
    in_process_flags,
    server_flag,
)
from research_service.client.lines import LineReader
from research_service.client.review import ReviewInput
from research_service.client.session import ask
from research_service.errors import ClientError, UsageError


def add_parser(commands: Any) -> None:
    """The `ask` sub-command."""
    ask_parser = commands.add_parser(
        "ask",
        help=help_line("ask"),
        description="Start a research run and follow it: the phases, the searches, the "
        "sources and the answer as it is written. Without --server the run happens in an "
        "in-process service on the embedded defaults (builtin model, local search), so no "
        "server needs to be running; its runs end with the command. A 429 (too many runs) is "
        "tried again after its Retry-After, a few times. " + exit_codes_help("a bad question"),
    )
    ask_parser.add_argument(
        "question", nargs="+", help="the question (several words are joined; - reads stdin)"
    )
    server_flag(ask_parser, "start the run")
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
    in_process_flags(ask_parser)
    ask_parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """`research-service ask`."""
    question = " ".join(args.question)
    from_stdin = question == "-"
    options: dict[str, Any] = {
        name: value
        for name in ("breadth", "max_sources", "depth", "max_tokens")
        if (value := getattr(args, name)) is not None
    }
    if args.review:
        options["review_plan"] = True
    try:
        if from_stdin:
            question = _question_from_stdin()
        check_service_flags(args)
    except ClientError as exc:
        return usage(str(exc))
    try:
        out = output(args)  # before any service or run: a closed stdout stops it here
    except ClientError as exc:
        return fail(exc)

    async def main() -> int:
        async with chosen_service(args) as (api, in_process):
            out.in_process = in_process
            if args.review:
                out.review = ReviewInput(_answers(stdin_used=from_stdin), sys.stderr)
            return await ask(api, question, options, out)

    return run_command(main(), follows_a_run=True)


def _question_from_stdin() -> str:
    """`ask -`: the question piped in; UsageError when there is none to read."""
    if sys.stdin is None:
        raise UsageError("no question on stdin (it is closed); pass the question as arguments")
    try:
        return sys.stdin.read()
    except UnicodeDecodeError:
        raise UsageError("the question on stdin is not UTF-8 text") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the question from stdin ({exc})") from None


def _answers(*, stdin_used: bool) -> LineReader | None:
    """Where review decisions are read: stdin, else the terminal when stdin held the question.

    None when there is nothing to read them from (stdin closed, no terminal): the person is
    told how to decide from another shell.
    """
    if not stdin_used:
        try:
            return None if sys.stdin is None else LineReader(sys.stdin.fileno())
        except (OSError, ValueError):  # stdin is closed
            return None
    try:
        terminal = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:  # no controlling terminal: decisions come from another shell
        return None
    return LineReader(terminal)
