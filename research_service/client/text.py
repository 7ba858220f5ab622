"""Words and figures both terminal displays use: durations, the done summary, query lines."""

from __future__ import annotations

import re
from typing import Any, Protocol

from research_service.client.events import RunEvent

#: A citation in the answer: [2] or [1, 3].
CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


class Display(Protocol):
    """Shows a run to a person or a program as its events arrive."""

    def start(self, *, run_id: str, question: str) -> None:
        """The run is known; nothing has arrived yet."""

    def event(self, event: RunEvent) -> None:
        """One event, in order, each exactly once."""

    def finish(self) -> None:
        """No more events will come (after `done`, or when the listener stops)."""

    def pause(self) -> None:
        """Stop drawing for a while: someone types on the terminal (a plan review)."""

    def resume(self) -> None:
        """Draw again after `pause`."""


def plural(count: int, word: str) -> str:
    """`1 query`, `3 queries`, `2 sources`."""
    if count == 1:
        return f"1 {word}"
    return f"{count} {word[:-1]}ies" if word.endswith("y") else f"{count} {word}s"


def duration(ms: int | None) -> str:
    """`850 ms`, `1.2 s`, `2 min 5 s`."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, seconds = divmod(round(ms / 1000), 60)
    return f"{minutes} min {seconds} s"


def usage_line(usage: dict[str, Any] | None) -> str:
    """`217 prompt + 134 completion tokens (estimated)`."""
    if not usage:
        return "no token usage reported"
    text = (
        f"{usage.get('prompt_tokens', 0)} prompt + "
        f"{usage.get('completion_tokens', 0)} completion tokens"
    )
    return text + (" (estimated)" if usage.get("estimated") else "")


def done_line(done: dict[str, Any]) -> str:
    """One line summing up a finished run: status, times, tokens, and why it stopped."""
    timings = done.get("timings_ms") or {}
    phases = ", ".join(
        f"{name} {duration(timings.get(name))}"
        for name in ("planning", "searching", "synthesizing")
    )
    line = (
        f"{done.get('status')} in {duration(timings.get('total'))} ({phases}); "
        f"{usage_line(done.get('usage'))}"
    )
    if done.get("truncated"):
        line += "; the answer stopped at the token budget"
    error = done.get("error")
    if error:
        line += f"\n{error.get('code')}: {error.get('message')}"
    return line


def query_result(data: dict[str, Any]) -> str:
    """What a finished search query gave: `+3 sources` or its error."""
    if "error" in data:
        return f"failed: {data['error']}"
    return "+" + plural(len(data.get("sources") or []), "source")


def reviewed_line(data: dict[str, Any]) -> str:
    """A review decision: `round 1 reviewed: approved`, `round 2 reviewed: edited: a | b`."""
    line = f"round {data.get('round')} reviewed: {data.get('decision')}"
    if data.get("queries"):
        line += ": " + " | ".join(str(q) for q in data["queries"])
    if data.get("feedback"):
        line += f": {data['feedback']}"
    return line


def review_outcome(review: str) -> str:
    """How a reviewed plan was settled, from `planning` `completed`'s `review`."""
    return {
        "approved": "the plan was approved",
        "edited": "the plan was edited by its reviewer",
        "timed_out": "no review decision in time: the plan runs as proposed",
    }.get(review, f"review: {review}")
