"""Reading the web sources: their best passages replace the search engine's snippets."""

from __future__ import annotations

import asyncio
import logging

from research_service.pipeline.context import RunContext
from research_service.providers.base import Source
from research_service.reading import PageError, Reader

log = logging.getLogger(__name__)

WEB_SCHEMES = ("http://", "https://")


async def read_pages(
    ctx: RunContext,
    reader: Reader,
    *,
    pages: int,
    concurrency: int,
    budget_chars: int,
) -> int:
    """Read up to `pages` web sources concurrently; each page read is a `progress` event.

    A page that cannot be read (refused, too large, not text, …) keeps its snippet and is
    reported with an error; the run goes on. Returns how many pages were read.
    """
    # A scheme in any case (`HTTP://`): search providers keep such results as pages.
    chosen = [s for s in ctx.sources if s.url.lower().startswith(WEB_SCHEMES)][:pages]
    if not chosen:
        return 0
    per_page = max(1, budget_chars // len(chosen))
    gate = asyncio.Semaphore(concurrency)

    async def read(source: Source) -> tuple[Source, list[str] | PageError]:
        async with gate:
            try:
                page = await reader.read(source.url, query=ctx.question, budget_chars=per_page)
            except PageError as exc:
                log.info("could not read %s: %s", source.url, exc)
                return source, exc
            return source, page.passages

    read_ok = 0
    tasks = [asyncio.ensure_future(read(source)) for source in chosen]
    try:
        for next_done in asyncio.as_completed(tasks):
            source, outcome = await next_done
            page: dict[str, object] = {"id": source.id, "url": source.url}
            if isinstance(outcome, PageError):
                page["error"] = {"code": outcome.code, "message": str(outcome)}
            elif outcome:
                text = "\n".join(outcome)
                index = ctx.sources.index(source)
                ctx.sources[index] = Source(source.id, source.title, source.url, text)
                page["chars"] = len(text)
                read_ok += 1
            await ctx.phase_event("searching", "progress", page=page)
    finally:
        for task in tasks:
            task.cancel()
    return read_ok
