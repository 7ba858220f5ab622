"""The replay server's providers: it has no model and no search engine, and says so if asked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Final

from research_service.errors import LLMError, SearchError
from research_service.providers.base import Plan, Reporter, SearchHit, Source

PROVIDER_NAME: Final = "replay"
_WHY: Final = (
    "this is a replay server: it serves recordings and runs no pipeline; use "
    "`research-service serve` to research new questions"
)


class NoModel:
    """A language model that refuses every call."""

    name: str = PROVIDER_NAME

    async def plan(self, question: str, *, breadth: int, report: Reporter) -> Plan:
        """Refuse: there is no model."""
        raise LLMError(_WHY, provider=PROVIDER_NAME)

    async def follow_up(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        asked: Sequence[str],
        breadth: int,
        report: Reporter,
    ) -> list[str]:
        """Refuse: there is no model."""
        raise LLMError(_WHY, provider=PROVIDER_NAME)

    def synthesize(
        self,
        question: str,
        sources: Sequence[Source],
        *,
        report: Reporter,
        max_tokens: int | None = None,
    ) -> AsyncIterator[str]:
        """Refuse: there is no model."""
        raise LLMError(_WHY, provider=PROVIDER_NAME)


class NoSearch:
    """A search engine that refuses every query."""

    name: str = PROVIDER_NAME

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """Refuse: there is no search engine."""
        raise SearchError(_WHY, provider=PROVIDER_NAME)
