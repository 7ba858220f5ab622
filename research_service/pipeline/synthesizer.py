"""Synthesizing: stream the model's cited answer into `token` events."""

from __future__ import annotations

from research_service.pipeline.context import RunContext
from research_service.providers.base import LLMProvider, Source


async def synthesize(ctx: RunContext, llm: LLMProvider, sources: list[Source]) -> str:
    """Run the synthesizing phase and return the full answer."""
    await ctx.phase_event("synthesizing", "started", sources=len(sources))
    parts: list[str] = []
    async for piece in llm.synthesize(ctx.question, sources):
        if piece:
            parts.append(piece)
            await ctx.emit("token", {"text": piece})
    await ctx.phase_event("synthesizing", "completed")
    return "".join(parts)
