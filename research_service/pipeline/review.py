"""Plan review: the run shows its plan and waits for a person to approve, edit or redirect it.

The stream stays one-way: the plan goes out as a `phase` event (`planning` `review`), and the
decision comes back by a separate request (`POST /v1/runs/{id}/plan`), which hands it to the
run's ReviewGate. Each decision is an event of the run (`planning` `reviewed`), so listeners,
recordings and replays see it in its place.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

#: Re-plans with feedback a run allows; in the last round only approve or edit is taken.
MAX_REVIEW_ROUNDS: Final = 5
#: What the snapshot and the list say while a run waits for its plan to be reviewed.
AWAITING_PLAN_REVIEW: Final = "plan_review"


@dataclass(frozen=True, slots=True)
class Decision:
    """A reviewer's answer: approve (neither field), edit (`queries`) or re-plan (`feedback`)."""

    queries: tuple[str, ...] | None = None
    feedback: str | None = None

    @property
    def kind(self) -> Literal["approved", "edited", "feedback"]:
        """What the decision does, as events and responses name it."""
        if self.feedback is not None:
            return "feedback"
        return "approved" if self.queries is None else "edited"

    def event_data(self, round_number: int) -> dict[str, Any]:
        """The payload fields of the run's `planning` `reviewed` event."""
        data: dict[str, Any] = {"round": round_number, "decision": self.kind}
        if self.queries is not None:
            data["queries"] = list(self.queries)
        if self.feedback is not None:
            data["feedback"] = self.feedback
        return data


def decision_json(decision: Decision) -> str:
    """A decision as JSON (between the nodes of a cluster)."""
    queries = None if decision.queries is None else list(decision.queries)
    return json.dumps({"queries": queries, "feedback": decision.feedback})


def decision_from_json(raw: str | bytes) -> Decision:
    """The decision `decision_json` wrote."""
    data = json.loads(raw)
    queries = data.get("queries")
    return Decision(
        queries=None if queries is None else tuple(queries), feedback=data.get("feedback")
    )


#: Why a decision is refused (409), in words a client can act on.
NOT_WAITING: Final = (
    "no review of the plan is open: it was decided already (only the first decision is taken) "
    "or its review timed out"
)
NO_MORE_REPLANS: Final = (
    f"the plan was re-planned {MAX_REVIEW_ROUNDS - 1} times, the most a run allows; "
    "approve it or send the queries to run"
)


def wrong_round(asked: int, open_round: int) -> str:
    """Why a decision meant for round `asked` is refused while round `open_round` is open."""
    if asked < open_round:
        return (
            f"round {asked} was decided already; the plan now waits in round {open_round}: "
            "read its queries (the stream's review event, or the snapshot) and decide on them"
        )
    return f"round {asked} has not begun; the plan waits in round {open_round}"


class ReviewRefused(Exception):
    """The run takes no such decision now (it waits for none, or no more re-plans)."""


class ReviewGate:
    """Where a run waits for the decision on its plan, and where a request delivers it.

    Only one decision is taken per round: the first request wins, later ones are refused,
    whichever node or client they come from (a request is handled whole on the event loop).
    """

    def __init__(self) -> None:
        self._waiting: asyncio.Future[Decision] | None = None
        self.round = 0
        self.feedback_allowed = False

    @property
    def waiting(self) -> bool:
        """Whether the run waits for a decision now."""
        return self._waiting is not None and not self._waiting.done()

    def decide(self, decision: Decision, *, round_number: int | None = None) -> int:
        """Hand `decision` to the waiting run; its round. ReviewRefused if it is not taken.

        With `round_number`, only while that round is open: a reviewer who saw round 1
        never decides round 2, which another reviewer's feedback opened meanwhile.
        """
        if not self.waiting:
            raise ReviewRefused(NOT_WAITING)
        if round_number is not None and round_number != self.round:
            raise ReviewRefused(wrong_round(round_number, self.round))
        if decision.feedback is not None and not self.feedback_allowed:
            raise ReviewRefused(NO_MORE_REPLANS)
        assert self._waiting is not None
        self._waiting.set_result(decision)
        return self.round

    def open(self, round_number: int) -> None:
        """Take decisions for this round from now on.

        Called before the plan is shown: a decision that follows the `review` event at once
        must find the gate open.
        """
        self.round = round_number
        self.feedback_allowed = round_number < MAX_REVIEW_ROUNDS
        self._waiting = asyncio.get_running_loop().create_future()

    async def wait(self, *, timeout: float) -> tuple[Decision | None, float]:
        """Wait for the open round's decision: it (None after `timeout`), the seconds waited."""
        waiting = self._waiting
        assert waiting is not None, "open() the round first"
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                decision: Decision | None = await asyncio.shield(waiting)
        except TimeoutError:
            # A decision that arrived as the time ran out was answered 202: it is taken.
            late = waiting.done() and not waiting.cancelled()
            decision = waiting.result() if late else None
        finally:
            if not waiting.done():
                waiting.cancel()
        return decision, time.monotonic() - started
