"""Plan review at the terminal: show the proposed queries, read a decision, send it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TextIO

from research_service.client.api import ServiceClient
from research_service.client.events import RunEvent
from research_service.client.lines import LineReader
from research_service.client.output import printable
from research_service.client.text import Display, duration
from research_service.errors import ClientError, RunRefused

#: What a reviewer types: Enter or `a` approves, `e` edits, `f` gives feedback (re-plans).
APPROVE_WORDS: Final = frozenset({"", "a", "approve", "y", "yes"})
EDIT_WORDS: Final = frozenset({"e", "edit"})
FEEDBACK_WORDS: Final = frozenset({"f", "feedback"})
#: Separates the queries of a one-line edit: `e first query | second query`.
QUERY_SEPARATOR: Final = "|"


@dataclass(frozen=True, slots=True)
class ReviewInput:
    """Where `ask --review` reads decisions (None: nowhere) and writes its prompts."""

    lines: LineReader | None
    out: TextIO


@dataclass(frozen=True, slots=True)
class Proposal:
    """A plan that waits for review: its round, its queries and what the run still takes."""

    round: int
    queries: tuple[str, ...]
    feedback_allowed: bool
    expires_in_s: float | None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Proposal:
        expires = data.get("expires_in_s")
        return cls(
            round=int(data.get("round", 1)),
            queries=tuple(str(q) for q in data.get("queries") or ()),
            feedback_allowed=bool(data.get("feedback_allowed", True)),
            expires_in_s=float(expires) if isinstance(expires, int | float) else None,
        )


def planning_status(event: RunEvent) -> str | None:
    """The status of a `planning` phase event (`review`, `reviewed`, …); None for others."""
    if event.name == "phase" and event.data.get("phase") == "planning":
        return str(event.data.get("status"))
    return None


def split_queries(text: str) -> list[str]:
    """The queries of a one-line edit, `first | second`, without blanks."""
    return [q.strip() for q in text.split(QUERY_SEPARATOR) if q.strip()]


def parse_choice(line: str) -> tuple[str | None, str]:
    """A typed answer as (approve | edit | feedback | None when unknown, the rest of the line)."""
    word, _, rest = line.strip().partition(" ")
    word = word.casefold()
    for kind, words in (("approve", APPROVE_WORDS), ("edit", EDIT_WORDS)):
        if word in words:
            return kind, rest.strip()
    if word in FEEDBACK_WORDS:
        return "feedback", rest.strip()
    return None, line.strip()


def plan_command(run_id: str, server: str) -> str:
    """The command that decides a review from another shell."""
    return (
        f"research-service plan {run_id} --approve | --query Q [--query Q …] | --feedback TEXT "
        f"--server {server}"
    )


class Reviewer:
    """Asks the person at the terminal to review each plan the run proposes, and sends it.

    A prompt runs beside the event stream: when the round is decided elsewhere (another
    shell, the panel) or times out, the prompt is dropped and the run is followed on.
    """

    def __init__(
        self,
        *,
        api: ServiceClient,
        run_id: str,
        review: ReviewInput,
        display: Display,
        notify: Callable[[str], None],
    ) -> None:
        self.api, self.run_id, self.input = api, run_id, review
        self.display, self.notify = display, notify
        self._task: asyncio.Task[None] | None = None
        self._sending = False  # our decision is on its way: its answer says how it went

    def event(self, event: RunEvent) -> None:
        """Start a prompt for a `review`; drop it when its round ends without it."""
        status = planning_status(event)
        if status == "review":
            self._drop()
            self._sending = False
            self._task = asyncio.create_task(self._review(Proposal.of(event.data)))
        elif (status in ("reviewed", "completed") or event.is_final) and self._pending():
            self._drop()
            if status == "reviewed":
                self.notify(
                    f"round {event.data.get('round')} was decided elsewhere "
                    f"({event.data.get('decision')}); following on"
                )
            elif event.data.get("review") == "timed_out":
                self.notify("no decision in time: the run goes on with the proposed plan")

    async def close(self) -> None:
        """Drop a prompt still waiting (the run ended, or the person stopped listening)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _pending(self) -> bool:
        return self._task is not None and not self._task.done() and not self._sending

    def _drop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None

    async def _review(self, proposal: Proposal) -> None:
        lines = self.input.lines
        if lines is None or lines.at_eof:
            self._elsewhere(proposal)
            return
        self.display.pause()
        try:
            self._show(proposal)
            while True:
                body = await self._read_decision(proposal, lines)
                if body is None:
                    self._elsewhere(proposal)
                    return
                if await self._send(proposal, body):
                    return
        finally:
            self.display.resume()

    def _elsewhere(self, proposal: Proposal) -> None:
        """No one can answer here: say how to decide from another shell."""
        signed = " (with the run's API key)" if self.api.api_key else ""
        self.notify(
            f"run {self.run_id} waits for a review of its plan (round {proposal.round}), and "
            f"no answer can be read here; decide from another shell{signed}: "
            f"{plan_command(self.run_id, self.api.shown_url)}"
        )

    def _write(self, text: str) -> None:
        self.input.out.write(printable(text))  # the queries and the service's words included
        self.input.out.flush()

    def _show(self, proposal: Proposal) -> None:
        expires = (
            f"; without a decision in {duration(round(proposal.expires_in_s * 1000))} it runs "
            "as proposed"
            if proposal.expires_in_s is not None
            else ""
        )
        numbered = "".join(f"  {n}. {q}\n" for n, q in enumerate(proposal.queries, 1))
        choices = "Enter or a: approve · e: edit the queries"
        choices += " · f: feedback, plan again" if proposal.feedback_allowed else ""
        self._write(
            f"\nPlan for review, round {proposal.round}{expires}:\n{numbered}{choices}\n"
            f"(or from another shell: {plan_command(self.run_id, self.api.shown_url)})\n"
        )

    async def _read_decision(self, proposal: Proposal, lines: LineReader) -> dict[str, Any] | None:
        """The body of the decision typed, or None when the input ended without one."""
        while True:
            self._write("decision [a/e/f]: " if proposal.feedback_allowed else "decision [a/e]: ")
            line = await self._readline(lines)
            if line is None:
                return None
            kind, rest = parse_choice(line)
            if kind == "approve" and not rest:
                return {}
            if kind == "edit":
                queries = split_queries(rest) if rest else await self._read_queries(lines)
                if queries:
                    return {"queries": queries}
                self._write("no queries given; the plan is unchanged\n")
            elif kind == "feedback" and proposal.feedback_allowed:
                if not rest:
                    self._write("feedback (one line): ")
                    rest = (await self._readline(lines) or "").strip()
                if rest:
                    return {"feedback": rest}
                self._write("no feedback given\n")
            elif kind == "feedback":
                self._write("no more re-plans for this run: approve (a) or edit (e)\n")
            else:
                self._write(
                    "answer Enter or a (approve), e (edit), f (feedback), "
                    f"or e q1 {QUERY_SEPARATOR} q2 to edit on one line\n"
                )

    async def _readline(self, lines: LineReader) -> str | None:
        """The next answer; one piped in is echoed, so the prompts read as a dialogue."""
        line = await lines.readline()
        if line is not None and not lines.is_terminal:
            self._write(line + "\n")
        return line

    async def _read_queries(self, lines: LineReader) -> list[str]:
        self._write("the queries to run, one per line; an empty line ends:\n")
        queries: list[str] = []
        while (line := await self._readline(lines)) is not None and line.strip():
            queries.append(line.strip())
        return queries

    async def _send(self, proposal: Proposal, body: dict[str, Any]) -> bool:
        """Send the decision; whether the round is over (decided by us or by someone else)."""
        self._sending = True
        try:
            # The round shown: a later one (opened by another reviewer meanwhile) is refused.
            answer = await self.api.decide(self.run_id, {**body, "round": proposal.round})
        except RunRefused as exc:
            self._sending = False
            if exc.status == 409:
                self._write(f"not sent (decided elsewhere first, or over): {exc}; following on\n")
                return True
            self._write(f"not sent: {exc}\n")  # a 400 names the field: ask again
            return False
        except ClientError as exc:
            self._write(f"could not send the decision: {exc}\n")
            self._elsewhere(proposal)
            return True
        self._write(f"sent: round {answer.get('round', proposal.round)} {answer.get('decision')}\n")
        return True
