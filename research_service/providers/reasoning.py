"""Keep a model's reasoning out of its answer: `<think>` blocks and reasoning delta fields."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import Choice, ChoiceDelta
from openai.types.completion_usage import CompletionUsage

from research_service.providers.base import Reporter, Usage, estimate_tokens, tokens_for_chars
from research_service.providers.chat_replies import reported_usage
from research_service.providers.llm_errors import MalformedReply
from research_service.text import well_formed

THINK_OPEN: Final = "<think>"
THINK_CLOSE: Final = "</think>"
_HIGH_SURROGATES: Final = ("\ud800", "\udbff")
# Delta fields where reasoning models put their thoughts; billed, never shown.
REASONING_FIELDS: Final = ("reasoning_content", "reasoning")
#: A block and the whitespace after it, or a block left open to the end (reasoning cut short).
_THINK_BLOCK: Final = re.compile(
    rf"{re.escape(THINK_OPEN)}(?:.*?{re.escape(THINK_CLOSE)}\s*|.*\Z)", re.DOTALL
)


def _partial_tag_length(text: str, tag: str) -> int:
    """How many characters at the end of `text` could be the start of `tag`."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class ThinkFilter:
    """An incremental filter that removes `<think>…</think>` blocks from streamed text.

    Tags may be split across pieces at any point: the filter holds back a trailing partial
    tag until the next piece decides it. Whitespace right after a closing tag is dropped so
    the answer does not start with the blank lines a reasoning model puts after its thoughts.
    A block still open at the end of the stream is reasoning cut short and is dropped.
    """

    __slots__ = ("_held", "_in_think", "_skip_space")

    def __init__(self) -> None:
        self._held = ""
        self._in_think = False
        self._skip_space = False

    def feed(self, text: str) -> str:
        """Take the next piece of the stream and return the visible text it completes.

        One pass over the piece: each step finds the next tag from a position, never copying
        what is left (a reply of a million tags is a million steps, not a million copies).
        """
        rest = self._held + text
        self._held = ""
        out: list[str] = []
        at, size = 0, len(rest)
        while at < size:
            if self._in_think:
                end = rest.find(THINK_CLOSE, at)
                if end < 0:
                    # Everything here is reasoning; keep only what may start the closing tag.
                    keep = _partial_tag_length(
                        rest[max(at, size - len(THINK_CLOSE)) :], THINK_CLOSE
                    )
                    self._held = rest[size - keep :]
                    break
                at = end + len(THINK_CLOSE)
                self._in_think = False
                self._skip_space = True
                continue
            if self._skip_space:
                while at < size and rest[at].isspace():
                    at += 1
                if at == size:
                    break
                self._skip_space = False
            start = rest.find(THINK_OPEN, at)
            if start >= 0:
                out.append(rest[at:start])
                at = start + len(THINK_OPEN)
                self._in_think = True
                continue
            keep = _partial_tag_length(rest[max(at, size - len(THINK_OPEN)) :], THINK_OPEN)
            out.append(rest[at : size - keep])
            self._held = rest[size - keep :]
            break
        return "".join(out)

    def flush(self) -> str:
        """End the stream: return held-back visible text; an unclosed block is dropped."""
        held, in_think = self._held, self._in_think
        self._held, self._in_think, self._skip_space = "", False, False
        return "" if in_think else held


def strip_think(text: str) -> str:
    """`text` without its `<think>…</think>` blocks (the whole-string form of ThinkFilter).

    One regular expression, so a reply of a million tags is read at C speed: a plan's reply
    is parsed on the event loop.
    """
    return _THINK_BLOCK.sub("", text)


@dataclass(slots=True)
class AnswerStream:
    """What a streamed answer has delivered so far: visible text, usage, finish reason."""

    think: ThinkFilter = field(default_factory=ThinkFilter)
    usage: CompletionUsage | None = None
    finish_reason: str | None = None
    # How much text was generated, reasoning included, for estimates: counted, not kept, so
    # a server that streams reasoning until the timeout costs no memory for it.
    received_chars: int = 0
    # A high surrogate that ended a delta: its pair may begin the next one (a server that
    # splits "\ud83d\ude00" between two chunks), so it waits for it before it is text.
    held_surrogate: str = ""

    def take(self, chunk: ChatCompletionChunk) -> str:
        """Fold in one chunk; return the answer text it makes visible.

        Raises MalformedReply for a chunk the SDK passed on unchecked (it does not validate).
        """
        if not isinstance(chunk, ChatCompletionChunk):  # `data: [1, 2]`, `data: null` …
            raise MalformedReply(f"a chunk that is {type(chunk).__name__}, not an object")
        if isinstance(chunk.usage, CompletionUsage):
            self.usage = chunk.usage
        choices = chunk.choices
        if choices is not None and not isinstance(choices, list):
            raise MalformedReply(f"a chunk's choices are {type(choices).__name__}, not a list")
        visible: list[str] = []
        for choice in choices or ():
            if not isinstance(choice, Choice) or not isinstance(choice.index, int | None):
                raise MalformedReply("a chunk's choice is not an object with an index")
            if choice.index or choice.delta is None:
                continue
            delta = choice.delta
            if not isinstance(delta, ChoiceDelta) or not isinstance(delta.content, str | None):
                raise MalformedReply("a chunk's delta is not an object with text content")
            extra = delta.model_extra or {}
            self.received_chars += sum(
                len(t) for k in REASONING_FIELDS if isinstance(t := extra.get(k), str)
            )
            if isinstance(choice.finish_reason, str) and choice.finish_reason:
                self.finish_reason = choice.finish_reason
            text = delta.content
            if not text and isinstance(refusal := delta.refusal, str):
                # The model declined: its reason is the answer (the plan's reply shows it too).
                text = refusal
            if text:
                self.received_chars += len(text)
                visible.append(self.think.feed(self._joined(text)))
        return "".join(visible)

    def spent(self, max_tokens: int | None) -> bool:
        """Whether the stream generated `max_tokens`, its reasoning counted as well.

        A server that ignores the limit it was given, and reasons on, is stopped here as
        if it had stopped at the limit (its finish reason becomes "length").
        """
        if max_tokens is None or not self.received_chars:
            return False
        if tokens_for_chars(self.received_chars) < max_tokens:
            return False
        self.finish_reason = "length"
        return True

    def flush(self) -> str:
        """The answer text still held back, once the stream has ended."""
        held, self.held_surrogate = self.held_surrogate, ""
        return self.think.feed(well_formed(held)) + self.think.flush()

    def report_usage(self, report: Reporter, *, prompt: str, max_tokens: int | None) -> None:
        """Report the server's usage for the stream, or an estimate if it sent none.

        A stream that stopped at the token limit generated `max_tokens`, whatever its text's
        length suggests: the run then counts its budget spent, and says the answer is cut.
        """
        usage = reported_usage(self.usage)
        if usage is not None:
            report.usage(usage)
            return
        chars = self.received_chars
        completion = tokens_for_chars(chars) if chars else 0
        if self.finish_reason == "length" and max_tokens is not None:
            completion = max(completion, max_tokens)
        report.usage(Usage(estimate_tokens(prompt), completion), estimated=True)

    def _joined(self, content: str) -> str:
        """`content` made well-formed, with a surrogate pair split between deltas joined."""
        content = self.held_surrogate + content
        if _HIGH_SURROGATES[0] <= content[-1] <= _HIGH_SURROGATES[1]:
            self.held_surrogate, content = content[-1], content[:-1]
        else:
            self.held_surrogate = ""
        return well_formed(content)
