"""The whole pipeline as one coroutine that only emits events and returns the answer."""

from __future__ import annotations

from dataclasses import dataclass

from research_service.defaults import (
    DEFAULT_CONTEXT_CHARS,
    DEFAULT_LLM_FIRST_TOKEN_TIMEOUT_S,
    DEFAULT_LLM_TOKEN_TIMEOUT_S,
    DEFAULT_PAGES_PER_RUN,
)
from research_service.errors import ProviderError
from research_service.pipeline.context import RunContext
from research_service.pipeline.pages import read_pages
from research_service.pipeline.planner import plan
from research_service.pipeline.searcher import search_all
from research_service.pipeline.synthesizer import synthesize
from research_service.providers.base import FollowUpRequest, LLMProvider, SearchProvider, Source
from research_service.reading import Reader


@dataclass(frozen=True, slots=True)
class Answer:
    """What a completed pipeline produced."""

    text: str
    sources: list[Source]


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The providers and limits a run's pipeline uses."""

    llm: LLMProvider
    search: SearchProvider
    search_concurrency: int
    search_timeout_s: float
    first_token_timeout_s: float = DEFAULT_LLM_FIRST_TOKEN_TIMEOUT_S
    token_timeout_s: float = DEFAULT_LLM_TOKEN_TIMEOUT_S
    # Web sources are read for passages when a reader is given (web search providers).
    reader: Reader | None = None
    pages_per_run: int = DEFAULT_PAGES_PER_RUN
    context_chars: int = DEFAULT_CONTEXT_CHARS

    async def run(self, ctx: RunContext) -> Answer:
        """Plan, search, synthesize; raise on a fatal problem (the caller emits `done`)."""
        queries = await plan(ctx, self.llm)

        async def follow_up(round_number: int, asked: list[str]) -> list[str]:
            if ctx.tokens.remaining() == 0:
                return []  # the budget is spent: no more model calls before the answer
            try:
                request = FollowUpRequest(
                    question=ctx.question,
                    sources=tuple(ctx.sources),
                    asked=tuple(asked),
                    breadth=ctx.options.breadth,
                    report=ctx.reporter("searching"),
                )
                return await self.llm.follow_up(request)
            except ProviderError as exc:
                # The rounds so far found sources: answer from them rather than fail.
                await ctx.phase_event(
                    "searching", "progress", round=round_number, error=f"follow-up failed: {exc}"
                )
                return []

        rounds = await search_all(
            ctx,
            self.search,
            queries,
            concurrency=self.search_concurrency,
            timeout=self.search_timeout_s,
            follow_up=follow_up,
        )
        extra: dict[str, int] = {}
        if self.reader is not None and self.pages_per_run:
            extra["pages"] = await read_pages(
                ctx,
                self.reader,
                pages=self.pages_per_run,
                concurrency=self.search_concurrency,
                budget_chars=self.context_chars,
            )
        sources = ctx.sources
        await ctx.phase_event(
            "searching", "completed", sources=len(sources), rounds=rounds, **extra
        )
        text = await synthesize(
            ctx,
            self.llm,
            sources,
            first_token_s=self.first_token_timeout_s,
            between_tokens_s=self.token_timeout_s,
        )
        return Answer(text, sources)
