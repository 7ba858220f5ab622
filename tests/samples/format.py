"""Captured streams as the docs show them: whole, picked events or `data:` lines, fixed ids."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from research_service.events import dumps

#: Written where a sample leaves something out.
ELLIPSIS: Final = "…"


@dataclass(frozen=True)
class Event:
    """One event of a captured stream."""

    seq: int
    name: str
    data: dict[str, Any]
    block: str  # its three lines, as sent

    @property
    def is_token(self) -> bool:
        return self.name == "token"


def events(stream: str) -> list[Event]:
    """The events of a captured stream, in order (the `retry:` block and comments left out)."""
    found = []
    for block in stream.split("\n\n"):
        lines = block.split("\n")
        if len(lines) != 3 or not lines[0].startswith("id: "):
            continue
        seq = int(lines[0].rsplit(":", 1)[1])
        name = lines[1].removeprefix("event: ")
        found.append(Event(seq, name, json.loads(lines[2].removeprefix("data: ")), block))
    return found


def run_id(stream: str) -> str:
    """The run id of a captured stream's events."""
    first = events(stream)[0].block.split("\n", 1)[0]
    return first.removeprefix("id: ").rsplit(":", 1)[0]


def compact(
    data: dict[str, Any], *, elide: tuple[str, ...] = (), brief: tuple[str, ...] = ()
) -> str:
    """`data` as the wire writes it, but each run of `elide` keys shown as `…` and each
    `brief` key's value as `[…]`."""
    parts: list[str] = []
    for key, value in data.items():
        if key in elide:
            if not parts or parts[-1] != ELLIPSIS:
                parts.append(ELLIPSIS)
            continue
        shown = f"[{ELLIPSIS}]" if key in brief else dumps(value)
        parts.append(f"{dumps(key)}:{shown}")
    return "{" + ",".join(parts) + "}"


def shown(event: Event, *, elide: tuple[str, ...] = (), brief: tuple[str, ...] = ()) -> str:
    """The event's three lines, its data shortened as `compact` does."""
    head = event.block.rsplit("\n", 1)[0]
    return f"{head}\ndata: {compact(event.data, elide=elide, brief=brief)}"


def fenced(body: str, lang: str = "text") -> str:
    """A fenced code block, ending with a line break."""
    return f"```{lang}\n{body.rstrip(chr(10))}\n```\n"


def sse_head(status: int = 200) -> str:
    """The status line and content type the docs show above a stream."""
    return f"HTTP {status}\nContent-Type: text/event-stream\n\n"


class Ids:
    """Replaces the random run ids (and the fakes' ports) of captures with fixed ones."""

    def __init__(self, seed: str = "") -> None:
        self.seed = seed
        self._swaps: dict[str, str] = {}
        # Counted apart from the swaps: two fakes may get the same port, one swap for both.
        self._stable = 0

    def fix(self, actual: str, shown: str) -> str:
        """Show `actual` as `shown` from now on; returns `shown`."""
        self._swaps[actual] = shown
        return shown

    def stable(self, actual: str) -> str:
        """Show the run id `actual` as the next of a fixed series (the same on every capture)."""
        digest = hashlib.sha256(f"{self.seed}:{self._stable}".encode()).hexdigest()
        self._stable += 1
        return self.fix(actual, digest[:16])

    def __call__(self, text: str) -> str:
        for actual, wanted in self._swaps.items():
            text = text.replace(actual, wanted)
        return text
