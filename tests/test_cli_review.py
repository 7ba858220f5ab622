"""Plan review from the terminal: `ask --review`, `plan` and `listen` against a served service."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import pty
import re
import select
import struct
import sys
import termios
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import cli_process
from tests.cli_process import Cli
from tests.loopback import refused_port
from tests.served import CORPUS, Served, start, stop

QUESTION = "Who created Python and when was it first released?"
#: Every wait is for a line or an event; this only bounds a broken one.
WAIT_S = 60.0


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    service = await start(
        *("--port", "0", "--corpus", str(CORPUS)),
        *("--data-dir", str(tmp_path / "data"), "--token-delay-ms", "0"),
        *("--review-timeout-s", "60", "--retry-ms", "100"),
        env={"RESEARCH_STORE": "memory"},
    )
    try:
        yield service
    finally:
        await stop(service)


async def start_answering(*args: str) -> Cli:
    """A command whose stdin is a pipe the test writes answers into."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "research_service",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=cli_process.child_env(),
    )
    return Cli(proc)


async def answer(cli: Cli, text: str) -> None:
    assert cli.proc.stdin is not None
    cli.proc.stdin.write(text.encode())
    await cli.proc.stdin.drain()


def planning(status: str, round_number: int | None = None) -> Any:
    """A predicate for a `--json` line: the planning event with this status (and round)."""

    def matches(event: dict[str, Any]) -> bool:
        data = event["data"]
        return (
            event["event"] == "phase"
            and data.get("phase") == "planning"
            and data.get("status") == status
            and (round_number is None or data.get("round") == round_number)
        )

    return matches


def planning_events(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["data"] for e in events if e["event"] == "phase" and e["data"]["phase"] == "planning"]


async def create_reviewed_run(served: Served) -> str:
    async with httpx.AsyncClient() as client:
        created = await client.post(
            f"{served.base}/v1/runs", json={"question": QUESTION, "options": {"review_plan": True}}
        )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


# --- ask --review, answered through a pipe ----------------------------------------------------


async def test_ask_review_enter_approves_the_plan(served: Served) -> None:
    cli = await start_answering("ask", "--review", "--json", "--server", served.base, QUESTION)
    review = await cli.json_until(planning("review"), timeout=WAIT_S)
    assert review["data"]["round"] == 1
    assert review["data"]["queries"]
    await answer(cli, "\n")
    result = await cli.finish()
    assert result.returncode == 0, result.stderr
    events = planning_events(result.json_lines())
    reviewed = next(e for e in events if e["status"] == "reviewed")
    assert (reviewed["round"], reviewed["decision"]) == (1, "approved")
    completed = events[-1]
    assert completed["status"] == "completed"
    assert (completed["review"], completed["queries"]) == ("approved", review["data"]["queries"])
    assert "Plan for review, round 1" in result.stderr
    assert "sent: round 1 approved" in result.stderr


async def test_ask_review_edits_the_queries_on_one_line(served: Served) -> None:
    cli = await start_answering("ask", "--review", "--json", "--server", served.base, QUESTION)
    await cli.json_until(planning("review"), timeout=WAIT_S)
    await answer(cli, "e Guido van Rossum | Python 0.9.0 release\n")
    result = await cli.finish()
    assert result.returncode == 0, result.stderr
    events = planning_events(result.json_lines())
    queries = ["Guido van Rossum", "Python 0.9.0 release"]
    assert {"status": "reviewed", "round": 1, "decision": "edited", "queries": queries}.items() <= (
        next(e for e in events if e["status"] == "reviewed").items()
    )
    assert (events[-1]["review"], events[-1]["queries"]) == ("edited", queries)


async def test_ask_review_feedback_plans_again_then_edit_line_by_line(served: Served) -> None:
    cli = await start_answering("ask", "--review", "--server", served.base, QUESTION)
    while "plan for review, round 1" not in await cli.line(WAIT_S):
        pass
    await answer(cli, "f\nthe first public release\n")
    while "plan for review, round 2" not in await cli.line(WAIT_S):
        pass
    await answer(cli, "e\nGuido van Rossum\nalt.sources 1991\n\n")
    result = await cli.finish()
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "[planning] round 1 reviewed: feedback: the first public release" in out
    assert "[planning] round 2 reviewed: edited: Guido van Rossum | alt.sources 1991" in out
    assert "[planning] the plan was edited by its reviewer" in out
    assert "\ndone: completed" in out
    assert "sent: round 1 feedback" in result.stderr
    assert "sent: round 2 edited" in result.stderr


async def test_ask_review_asks_again_after_an_answer_it_does_not_know(served: Served) -> None:
    cli = await start_answering("ask", "--review", "--json", "--server", served.base, QUESTION)
    await cli.json_until(planning("review"), timeout=WAIT_S)
    await answer(cli, "maybe\ne\n\na\n")  # unknown, then an empty edit: the plan stays
    result = await cli.finish()
    assert result.returncode == 0, result.stderr
    assert "answer Enter or a (approve), e (edit), f (feedback)" in result.stderr
    assert "no queries given; the plan is unchanged" in result.stderr
    assert planning_events(result.json_lines())[-1]["review"] == "approved"


# --- ask --review in a real pseudo-terminal ---------------------------------------------------


def _read_until(fd: int, seen: bytearray, marker: bytes, timeout: float) -> bool:
    """Read the terminal into `seen` until `marker` shows (True) or it closes (False)."""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} on the terminal:\n{seen.decode(errors='replace')}"
        if not select.select([fd], [], [], left)[0]:
            continue
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed its side
            return False
        if not chunk:
            return False
        seen += chunk
    return True


def visible(raw: bytes) -> str:
    text = raw.decode(errors="replace")
    return " ".join(re.sub(r"\x1b\]8;[^\x1b]*\x1b\\|\x1b\[[0-9;?]*[A-Za-z]", "", text).split())


async def test_on_a_terminal_ask_review_pauses_the_display_and_reads_an_edit(
    served: Served,
) -> None:
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "research_service",
        *("ask", "--review", "--server", served.base, QUESTION),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=cli_process.child_env(TERM="xterm-256color", COLUMNS="120", LINES="40"),
    )
    os.close(terminal)
    seen = bytearray()
    try:
        await asyncio.to_thread(_read_until, controller, seen, b"decision [a/e/f]: ", WAIT_S)
        os.write(controller, b"e\n")
        await asyncio.to_thread(_read_until, controller, seen, b"an empty line ends:", WAIT_S)
        os.write(controller, b"Guido van Rossum\n\n")
        await asyncio.to_thread(_read_until, controller, seen, b"\0", WAIT_S)  # to its exit
        async with asyncio.timeout(WAIT_S):
            assert await proc.wait() == 0, visible(bytes(seen))
    finally:
        os.close(controller)
    shown = visible(bytes(seen))
    assert "Plan for review, round 1" in shown
    assert "sent: round 1 edited" in shown
    assert "✓ Planning" in shown
    assert "completed in" in shown


# --- plan, from another shell -----------------------------------------------------------------


async def test_plan_approves_from_another_shell_and_refuses_a_second_decision(
    served: Served,
) -> None:
    """`ask` with nothing on stdin says how to decide elsewhere, and follows the run on."""
    cli = await cli_process.start("ask", "--review", "--json", "--server", served.base, QUESTION)
    review = await cli.json_until(planning("review"), timeout=WAIT_S)
    run_id = review["id"].split(":")[0]
    decided = await cli_process.run(
        "plan", run_id, "--approve", "--round", "1", "--server", served.base
    )
    assert decided.returncode == 0, decided.stderr
    assert decided.stdout == f"run {run_id}: round 1 approved\n"
    result = await cli.finish()
    assert result.returncode == 0, result.stderr
    assert f"decide from another shell: research-service plan {run_id} --approve" in result.stderr
    assert f"--server {served.base.rstrip('/')}" in result.stderr
    assert planning_events(result.json_lines())[-1]["review"] == "approved"

    again = await cli_process.run("plan", run_id, "--approve", "--server", served.base)
    assert again.returncode == 3
    assert again.stderr.startswith(f"research-service: run {run_id}")  # and the service's why
    assert again.stdout == ""


async def test_listen_json_shows_reviews_decided_with_plan(served: Served) -> None:
    run_id = await create_reviewed_run(served)
    listener = await cli_process.start("listen", run_id, "--server", served.base, "--json")
    await listener.json_until(planning("review", 1), timeout=WAIT_S)

    shown = await cli_process.run("plan", run_id, "--server", served.base)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"run {run_id} waits for a review of its plan, round 1:\n  1. ")

    feedback = await cli_process.run(
        "plan", run_id, "--feedback", "the first release", "--server", served.base, "--json"
    )
    assert feedback.returncode == 0, feedback.stderr
    body = feedback.json_lines()[0]
    assert (body["id"], body["decision"], body["round"]) == (run_id, "feedback", 1)

    await listener.json_until(planning("review", 2), timeout=WAIT_S)
    edited = await cli_process.run(
        *("plan", run_id, "--query", " Guido  van Rossum ", "--query", "guido van rossum"),
        *("--query", "Python 1991", "--server", served.base),
    )
    assert edited.returncode == 0, edited.stderr
    assert edited.stdout == f"run {run_id}: round 2 edited\n"

    result = await listener.finish()
    assert result.returncode == 0, result.stderr
    events = planning_events(result.json_lines())
    queries = ["Guido van Rossum", "Python 1991"]  # trimmed, a duplicate dropped
    assert [(e["status"], e.get("round"), e.get("decision")) for e in events] == [
        ("started", None, None),
        ("review", 1, None),
        ("reviewed", 1, "feedback"),
        ("review", 2, None),
        ("reviewed", 2, "edited"),
        ("completed", None, None),
    ]
    assert events[2]["feedback"] == "the first release"
    assert events[4]["queries"] == queries
    assert (events[5]["review"], events[5]["queries"]) == ("edited", queries)


async def test_ask_review_hears_of_a_decision_made_elsewhere(served: Served) -> None:
    """A prompt waiting on a pipe gives way when another shell decides first."""
    cli = await start_answering("ask", "--review", "--json", "--server", served.base, QUESTION)
    review = await cli.json_until(planning("review"), timeout=WAIT_S)
    run_id = review["id"].split(":")[0]
    decided = await cli_process.run("plan", run_id, "--query", "Guido", "--server", served.base)
    assert decided.returncode == 0, decided.stderr
    await cli.json_until(planning("completed"), timeout=WAIT_S)
    # Too late: nothing waits for it (and the command may have ended already).
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        await answer(cli, "a\n")
    result = await cli.finish()
    assert result.returncode == 0, result.stderr
    assert "round 1 was decided elsewhere (edited); following on" in result.stderr
    assert "sent:" not in result.stderr


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["0123456789abcdef", "--approve"], 2, "no run with id '0123456789abcdef'"),
        (["RUN", "--query", "  "], 2, "queries[0] is blank"),
        (["RUN", "--feedback", "x" * 2001], 2, "feedback is 2001 characters"),
        (["not-a-run", "--approve"], 2, "neither a run id"),
        (["RUN", "--round", "1"], 2, "--round goes with a decision"),
        (["RUN", "--approve", "--round", "9"], 2, "round must be an integer from 1 to 5"),
        # The plan of round 1 waits: a decision meant for another round is not taken.
        (["RUN", "--approve", "--round", "2"], 3, "round 2 has not begun"),
    ],
)
async def test_plan_refusals_exit_2_with_the_reason(
    served: Served, args: list[str], status: int, message: str
) -> None:
    run_id = await create_reviewed_run(served) if "RUN" in args else ""
    args = [run_id if a == "RUN" else a for a in args]
    result = await cli_process.run("plan", *args, "--server", served.base)
    assert result.returncode == status, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


async def test_plan_of_a_run_that_never_asked_exits_3(served: Served) -> None:
    async with httpx.AsyncClient() as client:
        created = await client.post(f"{served.base}/v1/runs", json={"question": QUESTION})
    run_id = created.json()["id"]
    shown = await cli_process.run("plan", run_id, "--server", served.base, "--json")
    assert (shown.returncode, shown.stdout) == (3, "null\n")
    result = await cli_process.run("plan", run_id, "--approve", "--server", served.base)
    assert result.returncode == 3
    assert result.stderr.startswith(f"research-service: run {run_id}")
    assert "review" in result.stderr


async def test_plan_of_an_unreachable_service_exits_4() -> None:
    server = f"http://127.0.0.1:{refused_port()}"
    result = await cli_process.run("plan", "0123456789abcdef", "--approve", "--server", server)
    assert result.returncode == 4
    assert "cannot reach the service" in result.stderr
