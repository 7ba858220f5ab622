"""Synthesizing: stream the model's cited answer into `token` events, within the budget."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from research_service.pipeline.context import RunContext
from research_service.pipeline.watchdog import StreamWatchdog
from research_service.providers.base import AnswerRequest, LLMProvider, Source, estimate_tokens

#: The most text one `token` event carries. A model server that sends a megabyte in one piece
#: has it cut into events of this size, and the budget stops it within one of them: no event,
#: stored copy or listener's buffer grows with what one piece of the stream holds.
MAX_PIECE_CHARS: Final = 4096
#: Pieces written in a row before the run gives the event loop a turn. A model's stream that
#: is already buffered (a fast server, or chunks that piled up while the loop was busy: one
#: read holds hundreds) suspends nowhere, and would write a whole answer in one step while
#: every other stream and request waits.
PIECES_PER_TURN: Final = 32


async def synthesize(
    ctx: RunContext,
    llm: LLMProvider,
    sources: list[Source],
    *,
    first_token_s: float,
    between_tokens_s: float,
) -> str:
    """Run the synthesizing phase and return the answer (cut short if the budget runs out)."""
    await ctx.phase_event("synthesizing", "started", sources=len(sources))
    parts: list[str] = []
    remaining = ctx.tokens.remaining()
    if remaining == 0:
        ctx.truncated = True
        await ctx.phase_event("synthesizing", "completed", truncated=True)
        return ""
    request = AnswerRequest(
        question=ctx.question,
        sources=tuple(sources),
        report=ctx.reporter("synthesizing"),
        max_tokens=remaining,
    )
    stream = llm.synthesize(request)
    watchdog = ctx.watchdog = StreamWatchdog(first_s=first_token_s, between_s=between_tokens_s)
    tokens = ctx.tokens
    try:
        spent = False
        async for piece in stream:
            watchdog.tick()
            for start in range(0, len(piece), MAX_PIECE_CHARS):
                text = piece[start : start + MAX_PIECE_CHARS]
                parts.append(text)
                await ctx.emit("token", {"text": text})
                if tokens.budget is not None:
                    tokens.live_completion += estimate_tokens(text)
                    spent = tokens.generated >= tokens.budget
                    if spent:
                        ctx.truncated = True
                        break
                if len(parts) % PIECES_PER_TURN == 0:
                    await asyncio.sleep(0)  # the loop's other work goes first
            if spent:
                break
    except asyncio.CancelledError:
        current = asyncio.current_task()
        # Only the watchdog cancelled us: a timeout, not a cancelled run.
        if watchdog.fired is None or current is None or current.cancelling() > 1:
            raise
        current.uncancel()
        raise watchdog.error() from None
    finally:
        watchdog.stop()
        ctx.watchdog = None
        # Closing the provider's stream stops the model at once (budget, cancel, timeout).
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()
    if tokens.budget is not None and tokens.generated >= tokens.budget:
        ctx.truncated = True  # the server stopped at the max_tokens it was given
    extra = {"truncated": True} if ctx.truncated else {}
    await ctx.phase_event("synthesizing", "completed", **extra)
    return "".join(parts)
