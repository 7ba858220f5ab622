"""Listening helpers built on httpx + httpx-sse, an SSE client independent of the service.

Every event `listen` receives is validated against its JSON Schema (docs/schemas/).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.openapi_check import check_event


@dataclass
class Received:
    """What one connection delivered, as a browser's EventSource would dispatch it."""

    status: int
    headers: httpx.Headers
    events: list[ServerSentEvent] = field(default_factory=list)
    retry: int | None = None
    ended: bool = False  # the server closed the response

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.events]

    @property
    def names(self) -> list[str]:
        return [e.event for e in self.events]

    def data(self, index: int) -> Any:
        return json.loads(self.events[index].data)

    @property
    def last(self) -> tuple[str, Any]:
        return self.events[-1].event, json.loads(self.events[-1].data)

    def text(self) -> str:
        return "".join(json.loads(e.data)["text"] for e in self.events if e.event == "token")


async def listen(
    client: httpx.AsyncClient,
    url: str,
    *,
    last_event_id: str | None = None,
    stop: Callable[[ServerSentEvent], bool] | None = None,
    timeout: float = 10.0,
) -> Received:
    """Read events until the server ends the stream, or until `stop(event)` is true."""
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    async with asyncio.timeout(timeout), aconnect_sse(client, "GET", url, headers=headers) as src:
        response = src.response
        received = Received(response.status_code, response.headers)
        if response.status_code != 200:
            await response.aread()
            return received
        async for sse in src.aiter_sse():
            if sse.retry is not None:
                received.retry = sse.retry
            # WHATWG: an event with an empty data buffer is not dispatched.
            if sse.data == "":
                continue
            received.events.append(sse)
            # Every event any test reads is checked against docs/schemas (a violation fails it).
            check_event(sse.event, json.loads(sse.data))
            if stop is not None and stop(sse):
                return received
        received.ended = True
        return received


def after_event(name: str, count: int = 1) -> Callable[[ServerSentEvent], bool]:
    """A `stop` predicate: true at the `count`-th event named `name`."""
    seen = 0

    def predicate(sse: ServerSentEvent) -> bool:
        nonlocal seen
        if sse.event == name:
            seen += 1
        return seen >= count

    return predicate
