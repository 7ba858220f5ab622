"""Requests taken a few per event-loop turn, before the middlewares' and handlers' work.

A burst's requests are read together: asyncio hands the loop every ready socket at once, and
aiohttp starts a handler for each. When the handlers passed the gate themselves, every
request's first step (routing, the checks of origin and access, the handler's first lines)
ran before it, in one turn: 179 steps of about 130 µs made a turn of 23 ms in which no
listener was written to (bench/README.md, "Requests take their turn before their checks").
Each request now passes `loop_turns.SHARED` here, after its id and its connection's busy mark
and before the checks; its step up to the gate is about 30 µs.

The probes of health and metrics do not pass it: a burst must not make a healthy node look
slow to its load balancer or its monitoring.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from research_service import loop_turns
from research_service.web.origin import HEALTH_PATHS

#: Paths whose requests go on at once, whatever the loop has to do.
UNGATED_PATHS: Final = HEALTH_PATHS | {"/metrics"}


@web.middleware
def turn_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Handle the request in this turn if it has room, else once a turn has.

    A plain function: a request that need not wait costs no coroutine of its own, and an
    idle stream no frame more (target 5 of issue 16 counts each listener's bytes).
    """
    if request.path in UNGATED_PATHS or loop_turns.SHARED.pass_now():
        return handler(request)
    return _after_turn(request, handler)


async def _after_turn(request: web.Request, handler: Handler) -> web.StreamResponse:
    await loop_turns.SHARED.turn()
    return await handler(request)
