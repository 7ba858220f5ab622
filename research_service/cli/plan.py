"""`research-service plan`: decide a run's plan review from another shell or a script."""

from __future__ import annotations

import argparse
from typing import Any, Final

from research_service.cli.api_key import api_key_flag, api_key_of
from research_service.cli.catalogue import help_line
from research_service.cli.flags import say
from research_service.cli.following import (
    fail,
    http_session,
    run_command,
    run_target_flags,
    usage,
)
from research_service.cli.service_choice import server_source
from research_service.client.api import ServiceClient
from research_service.client.output import Sink, json_line, printable, stdout
from research_service.client.review import plan_command
from research_service.client.session import parse_target
from research_service.errors import ClientError, RunRefused

#: Exit status when the run does not await this decision (409: decided already, finished, or
#: never asked for a review); `ask` and `listen` use 3 for a cancelled run: nothing happened.
EXIT_NOT_AWAITING: Final = 3
EXIT_CODES: Final = (
    "Exit status: 0 decided (or, without a decision, the run awaits one), 2 usage error or the "
    "service refused the request (a bad query or feedback, an unknown run, a missing or "
    "refused API key), 3 the run does not await a decision (decided already, by anyone; "
    "finished; or started without review), 4 the service could not be reached."
)


def add_parser(commands: Any) -> None:
    """The `plan` sub-command."""
    parser = commands.add_parser(
        "plan",
        help=help_line("plan"),
        description="Decide the plan of a run started with review (`ask --review`, or "
        'options {"review_plan": true}): approve it, run other queries, or send feedback so '
        "the model plans again. The first decision of a round wins. Without a decision, "
        "show the plan that waits. " + EXIT_CODES,
    )
    run_target_flags(parser)
    decision = parser.add_mutually_exclusive_group()
    decision.add_argument("--approve", action="store_true", help="run the plan as proposed")
    decision.add_argument(
        "--query",
        action="append",
        metavar="Q",
        help="run this query instead of the plan; repeat for each (1 to 8, up to 200 "
        "characters each)",
    )
    decision.add_argument(
        "--feedback", metavar="TEXT", help="what to change; the model plans again (a new round)"
    )
    parser.add_argument(
        "--round",
        type=int,
        metavar="N",
        help="decide only if round N is the one open (the round `plan` showed): a decision "
        "meant for a plan another reviewer has replaced since is refused (exit 3)",
    )
    api_key_flag(parser, "the service's API key (the one that started the run)")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the service's answer as one JSON object (without a decision: the review "
        "that waits, or null)",
    )
    parser.set_defaults(run=run)


def _decision(args: argparse.Namespace) -> dict[str, Any] | None:
    meant_for = {} if args.round is None else {"round": args.round}
    if args.approve:
        return meant_for
    if args.query is not None:
        return {"queries": args.query, **meant_for}
    if args.feedback is not None:
        return {"feedback": args.feedback, **meant_for}
    return None


def run(args: argparse.Namespace) -> int:
    """`research-service plan`."""
    try:
        server, run_id = parse_target(args.target, args.server, flag=server_source(args.server))
        api_key = api_key_of(args)
    except ClientError as exc:
        return usage(str(exc))
    decision = _decision(args)
    if decision is None and args.round is not None:
        return usage("--round goes with a decision: --approve, --query or --feedback")
    try:
        out = stdout()  # before any request: a closed stdout stops it here
    except ClientError as exc:
        return fail(exc)

    async def main() -> int:
        async with http_session() as session:
            api = ServiceClient(session, server, notify=say, api_key=api_key)
            if decision is None:
                snapshot = await api.snapshot(run_id)
                return _show(out, snapshot, as_json=args.json, server=server)
            try:
                answer = await api.decide(run_id, decision)
            except RunRefused as exc:
                if exc.status != 409:
                    raise
                detail = str(exc)  # the service's own words: decided already, ended, never asked
                say(detail if run_id in detail else f"run {run_id}: {detail}")
                return EXIT_NOT_AWAITING
        if args.json:
            _print(out, json_line(answer))
        else:
            _print(
                out,
                printable(f"run {run_id}: round {answer.get('round')} {answer.get('decision')}"),
            )
        return 0

    return run_command(main())


def _print(out: Sink, line: str) -> None:
    out.write(line + "\n")
    out.flush()


def _show(out: Sink, snapshot: dict[str, Any], *, as_json: bool, server: str) -> int:
    """The plan that waits for review (exit 0), or why there is none (EXIT_NOT_AWAITING)."""
    review = snapshot.get("review") if snapshot.get("awaiting") == "plan_review" else None
    run_id = snapshot["id"]
    if as_json:
        _print(out, json_line(review))
    elif review is not None:
        lines = [f"run {run_id} waits for a review of its plan, round {review.get('round')}:"]
        lines += [f"  {n}. {query}" for n, query in enumerate(review.get("queries") or [], 1)]
        lines.append(f"decide with: {plan_command(run_id, server.rstrip('/'))}")
        _print(out, printable("\n".join(lines)))
    else:
        say(f"run {run_id} does not wait for a review of its plan (it is {snapshot.get('status')})")
    return 0 if review is not None else EXIT_NOT_AWAITING
