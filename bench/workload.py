"""What every bench server streams and every bench client looks for, in one place."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

#: The bytes that open every `token` event line (the `id:` line's newline comes first).
TOKEN_MARK: Final = b"\nevent: token\n"
#: The bytes that open the first `phase` event line.
PHASE_MARK: Final = b"\nevent: phase\n"
#: Seen once a listener has everything before the first token (the run is held there).
READY_MARK: Final = b'"phase":"synthesizing","status":"started"'

_WORDS: Final = ("alpha ", "bravo ", "delta ", "gamma ", "kilo ", "lima ", "sigma ", "tango ")
_QUESTION_RE: Final = re.compile(
    r"^bench tokens=(?P<tokens>\d+) hold=(?P<hold>[01]) burst=(?P<burst>[01])$"
)


def token_pieces(count: int) -> list[str]:
    """`count` answer pieces of about 6 characters, the same on every run."""
    return [_WORDS[i % len(_WORDS)] for i in range(count)]


@dataclass(frozen=True, slots=True)
class Ask:
    """What a bench question asks a server for.

    `tokens`: how many token events; `hold`: wait for `POST /bench/start` before the first;
    `burst`: the model yields every piece without giving the event loop a turn in between
    (otherwise one turn per piece, as a model read off the network does).
    """

    tokens: int
    hold: bool = False
    burst: bool = False

    @property
    def question(self) -> str:
        """The question that carries this request to a bench server."""
        return f"bench tokens={self.tokens} hold={int(self.hold)} burst={int(self.burst)}"

    @classmethod
    def parse(cls, question: str) -> Ask:
        """The request a bench question carries; ValueError if it is not one."""
        match = _QUESTION_RE.match(question.strip())
        if match is None:
            raise ValueError(f"not a bench question: {question!r}")
        return cls(int(match["tokens"]), match["hold"] == "1", match["burst"] == "1")


@dataclass(frozen=True, slots=True)
class WireEvent:
    """One SSE event as captured from research-service: its bytes and its fields."""

    wire: bytes
    id: str
    event: str
    data: str


def split_stream(body: bytes) -> list[WireEvent]:
    """Split a captured research-service stream (one data line per event) into events."""
    events: list[WireEvent] = []
    for block in body.split(b"\n\n"):
        fields: dict[str, str] = {}
        for line in block.decode().split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            events.append(WireEvent(block + b"\n\n", fields["id"], fields["event"], fields["data"]))
    return events
