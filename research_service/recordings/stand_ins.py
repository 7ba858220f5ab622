"""The replay server's providers: it has no model and no search engine, and says so if asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from research_service.errors import LLMError, SearchError
from research_service.providers.base import (
    AnswerRequest,
    FollowUpRequest,
    Plan,
    PlanRequest,
    SearchHit,
)

PROVIDER_NAME: Final = "replay"
_WHY: Final = (
    "this is a replay server: it serves recordings and runs no pipeline; use "
    "`research-service serve` to research new questions"
)


class NoModel:
    """A language model that refuses every call."""

    name: str = PROVIDER_NAME

    async def plan(self, request: PlanRequest) -> Plan:
        """Refuse: there is no model."""
        raise LLMError(_WHY, provider=PROVIDER_NAME)

    async def follow_up(self, request: FollowUpRequest) -> list[str]:
        """Refuse: there is no model."""
        raise LLMError(_WHY, provider=PROVIDER_NAME)

    def synthesize(self, request: AnswerRequest) -> AsyncIterator[str]:
        """Refuse: there is no model."""
        raise LLMError(_WHY, provider=PROVIDER_NAME)


class NoSearch:
    """A search engine that refuses every query."""

    name: str = PROVIDER_NAME

    async def search(self, query: str, *, limit: int) -> list[SearchHit]:
        """Refuse: there is no search engine."""
        raise SearchError(_WHY, provider=PROVIDER_NAME)
