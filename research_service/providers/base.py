"""The provider seams: what the pipeline needs from a language model and a search engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One result of a search query, before the run numbers it as a source."""

    title: str
    url: str
    snippet: str
    score: float = 0.0


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


class LLMProvider(Protocol):
    """A language model: plans search queries and writes the cited answer."""

    name: str

    async def plan(self, question: str, *, breadth: int) -> list[str]:
        """Return 1..`breadth` search queries that together cover `question`."""
        ...

    def synthesize(self, question: str, sources: Sequence[Source]) -> AsyncIterator[str]:
        """Stream the answer in pieces, citing sources as `[id]`; raise LLMError on failure."""
        ...
