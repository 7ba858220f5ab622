"""Scripted replies: what the fake answers to each request, matched in order."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal, TypeVar

from tests.fake_openai.faults import Cut, ErrorEvent, Fault, Malformed, Stall
from tests.fake_openai.records import RecordedRequest
from tests.fake_openai.wire import split_tokens

Predicate = Callable[[RecordedRequest], bool]
F = TypeVar("F", bound=Fault)

CONTENT = "content"
DEFAULT_REASONING_FIELD = "reasoning_content"  # DeepSeek and vLLM's reasoning parsers


@dataclass(frozen=True)
class Usage:
    """Token counts the server reports; `total_tokens` is their sum."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(eq=False)
class Reply:
    """One scripted answer: text streamed in pieces, optional reasoning, usage and faults.

    `pieces` splits the text into the deltas to stream (default: words with their leading
    space). `reasoning` streams as `reasoning_field` deltas before the content; `think` is
    sent inside the content as `<think>…</think>` before the text. `usage="auto"` counts
    words; None sends no usage. `when` restricts which requests this reply answers.
    `interval` paces deltas (seconds apart, on an absolute schedule) for benchmarks.
    """

    text: str = ""
    _: KW_ONLY
    pieces: Sequence[str] | None = None
    reasoning: str | Sequence[str] | None = None
    think: str | None = None
    usage: Usage | Literal["auto"] | None = "auto"
    finish_reason: str = "stop"
    model: str | None = None
    when: Predicate | None = None
    faults: Sequence[Fault] = ()
    interval: float = 0.0
    reasoning_field: str = DEFAULT_REASONING_FIELD
    served: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.pieces is None:
            return
        joined = "".join(self.pieces)
        if self.text and joined != self.text:
            raise ValueError(f"pieces {list(self.pieces)!r} do not join to text {self.text!r}")
        self.text = joined

    @classmethod
    def json(cls, value: Any, **options: Any) -> Reply:
        """A reply whose text is `value` serialized as JSON (a plan, say)."""
        return cls(json.dumps(value), **options)

    def matches(self, request: RecordedRequest) -> bool:
        return self.when is None or self.when(request)

    def content_pieces(self) -> list[str]:
        """The content deltas, `<think>` block included."""
        pieces = list(self.pieces) if self.pieces is not None else split_tokens(self.text)
        if self.think is None:
            return pieces
        return ["<think>", *split_tokens(self.think), "</think>", *pieces]

    def reasoning_pieces(self) -> list[str]:
        if self.reasoning is None:
            return []
        if isinstance(self.reasoning, str):
            return split_tokens(self.reasoning)
        return list(self.reasoning)

    def deltas(self) -> list[tuple[str, str]]:
        """Every delta in order as (field, text): reasoning first, then content."""
        reasoning = [(self.reasoning_field, piece) for piece in self.reasoning_pieces()]
        return reasoning + [(CONTENT, piece) for piece in self.content_pieces()]

    def fault(self, kind: type[F]) -> F | None:
        """The first fault of this kind, if any."""
        return next((f for f in self.faults if isinstance(f, kind)), None)

    def faults_at(self, position: int) -> list[Stall | Malformed | ErrorEvent | Cut]:
        """The in-stream faults that fire once `position` deltas have been written."""
        return [
            f
            for f in self.faults
            if isinstance(f, Stall | Malformed | ErrorEvent | Cut) and f.after == position
        ]


class Script:
    """The replies a fake serves: a queue consumed in order, then replies that never run out.

    A request takes the first queued reply whose `when` accepts it; failing that, the first
    matching `always` reply; failing that, the fake answers 500 naming the request.
    """

    def __init__(self) -> None:
        self._queue: list[Reply] = []
        self._always: list[Reply] = []

    def add(self, reply: Reply) -> Reply:
        """Queue a reply for one request and return it."""
        self._queue.append(reply)
        return reply

    def reply(self, text: str = "", **options: Any) -> Reply:
        """Queue `Reply(text, **options)` and return it."""
        return self.add(Reply(text, **options))

    def fail(self, *faults: Fault, when: Predicate | None = None) -> Reply:
        """Queue a reply that is nothing but these faults (an error status, a reset...)."""
        return self.add(Reply(faults=faults, when=when))

    def always(self, reply: Reply) -> Reply:
        """Serve this reply to every matching request the queue does not answer."""
        self._always.append(reply)
        return reply

    @property
    def pending(self) -> list[Reply]:
        """Queued replies not yet served."""
        return list(self._queue)

    def clear(self) -> None:
        self._queue.clear()
        self._always.clear()

    def take(self, request: RecordedRequest) -> Reply | None:
        """The reply for this request, removed from the queue if it was queued."""
        for index, reply in enumerate(self._queue):
            if reply.matches(request):
                del self._queue[index]
                return reply
        return next((r for r in self._always if r.matches(request)), None)


def wants_json(request: RecordedRequest) -> bool:
    """The request asks for JSON output (`json_object` or `json_schema`): a planning call."""
    return request.response_format_type in ("json_object", "json_schema")


def wants_json_schema(request: RecordedRequest) -> bool:
    return request.response_format_type == "json_schema"


def streaming(request: RecordedRequest) -> bool:
    return request.stream


def mentions(text: str) -> Predicate:
    """Matches requests whose messages contain `text`."""
    return lambda request: text in request.text


def for_model(name: str) -> Predicate:
    return lambda request: request.model == name
