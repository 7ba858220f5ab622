"""The provider seams: what the pipeline needs from a language model and a search engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from research_service.hits import SearchHit

# SearchHit is part of the search seam; it is defined in the core so the corpus index can make it.
__all__ = [
    "AnswerRequest",
    "FollowUpRequest",
    "LLMProvider",
    "LLMRequest",
    "Plan",
    "PlanRequest",
    "Reporter",
    "SearchHit",
    "SearchProvider",
    "Source",
    "Usage",
    "estimate_tokens",
]


@dataclass(frozen=True, slots=True)
class Source:
    """A source the run keeps; `id` is the number cited as `[id]` in the answer."""

    id: int
    title: str
    url: str
    snippet: str

    def brief(self) -> dict[str, object]:
        """The fields a searching `progress` event carries."""
        return {"id": self.id, "title": self.title, "url": self.url}

    def full(self) -> dict[str, object]:
        """The fields the `done` event carries."""
        return {"id": self.id, "title": self.title, "url": self.url, "snippet": self.snippet}


class SearchProvider(Protocol):
    """A search backend: one query in, ranked hits out."""

    name: str

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """Return at most `limit` hits for `query`, best first; raise SearchError on failure."""
        ...


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens a model call consumed, as the server reported them (or an estimate)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    @property
    def total(self) -> int:
        """Prompt and completion tokens together."""
        return self.prompt_tokens + self.completion_tokens


def estimate_tokens(text: str) -> int:
    """A rough token count for `text` (about four characters a token), at least 1."""
    return tokens_for_chars(len(text))


def tokens_for_chars(chars: int) -> int:
    """A rough token count for a text of `chars` characters, at least 1."""
    return max(1, (chars + 3) // 4)


@dataclass(frozen=True, slots=True)
class Plan:
    """The planned search queries; `fallback` says why the model's own plan was not used."""

    queries: list[str]
    fallback: str | None = None


class Reporter(Protocol):
    """What a provider tells the run while it works on one stage (planning, synthesizing)."""

    async def retrying(self, *, attempt: int, wait_ms: int, reason: str) -> None:
        """A call failed and will be tried again after `wait_ms` (shown to listeners)."""
        ...

    def usage(self, usage: Usage, *, estimated: bool = False) -> None:
        """Add the tokens a call consumed to the stage's usage."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRequest:
    """Ask for 1..`breadth` search queries that together cover `question`."""

    question: str
    breadth: int
    report: Reporter
    #: A re-plan after review: the plan the reviewer saw, and what they asked for instead.
    previous: Sequence[str] = ()
    feedback: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FollowUpRequest:
    """Ask for up to `breadth` new queries about what `sources` leave open of `question`."""

    question: str
    sources: Sequence[Source]
    asked: Sequence[str]
    breadth: int
    report: Reporter


@dataclass(frozen=True, slots=True, kw_only=True)
class AnswerRequest:
    """Ask for the answer to `question` citing `sources` as `[id]`, within `max_tokens`."""

    question: str
    sources: Sequence[Source]
    report: Reporter
    max_tokens: int | None = None


#: Any request a model is handed; `report` receives its retries and usage.
LLMRequest = PlanRequest | FollowUpRequest | AnswerRequest


class LLMProvider(Protocol):
    """A language model: plans search queries and writes the cited answer."""

    name: str

    async def plan(self, request: PlanRequest) -> Plan:
        """Return 1..`request.breadth` search queries that together cover the question."""
        ...

    async def follow_up(self, request: FollowUpRequest) -> list[str]:
        """Up to `request.breadth` new queries for what the sources leave open; [] if nothing."""
        ...

    def synthesize(self, request: AnswerRequest) -> AsyncIterator[str]:
        """Stream the answer in pieces, citing sources as `[id]`; raise LLMError on failure.

        Closing the iterator early (the run was cancelled or ran out of budget) must stop
        the model at once: no tokens generated after it.
        """
        ...
