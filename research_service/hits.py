"""A search result as every layer sees it: search providers return it, the corpus index makes it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One result of a search query, before the run numbers it as a source."""

    title: str
    url: str
    snippet: str
    score: float = 0.0
