"""Follow a run's event stream to its `done`, reconnecting with Last-Event-ID when it breaks."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from research_service.client.api import (
    authorization,
    describe,
    read_answer,
    refused,
    unauthorized,
)
from research_service.client.events import RunEvent, run_event
from research_service.client.sse import SSEParser
from research_service.errors import NotAnEventStream, RunRefused, ServiceUnreachable
from research_service.events import parse_event_id

#: Wait before the first reconnect until the server sends its own `retry:`.
DEFAULT_RETRY_MS = 1000
#: Backoff doubles per failed attempt up to this, from at least MIN_BACKOFF_S: a `retry: 0`
#: (a proxy's, or `--retry-ms 0`) must not make reconnects a tight loop that never slows.
MAX_BACKOFF_S = 30.0
MIN_BACKOFF_S = 0.1
#: Give up when the service stays unreachable this long (its default abandon timeout).
DEFAULT_GIVE_UP_S = 300.0
#: No byte for this long (the service pings every 15 s) means the connection is dead.
DEFAULT_IDLE_TIMEOUT_S = 45.0
#: Time allowed to connect; a reconnect gets no more than what is left before giving up.
CONNECT_TIMEOUT_S = 10.0
MIN_CONNECT_S = 0.5
#: Statuses worth retrying: the service or a proxy in front of it is overloaded or restarting.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class _Broken(Exception):
    """A connection failure that a reconnect can mend."""


@dataclass
class Follower:
    """Reads the events of one run from `url`, resuming after the last event it saw.

    `notify` receives one line per connection problem (for stderr). Every event is
    delivered once, in order: events at or before the last seen seq are dropped, but for the
    ending of a run ended after a crash, which may come with seqs of events that the crash
    lost (docs/protocol.md, "After a crash"). With
    `api_key`, every connection carries `Authorization: Bearer`; a 401 ends the stream.
    """

    session: aiohttp.ClientSession
    url: str
    notify: Callable[[str], None]
    api_key: str | None = field(default=None, repr=False)
    last_id: str | None = None
    give_up_after_s: float = DEFAULT_GIVE_UP_S
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    reconnects: int = 0
    _retry_ms: int = DEFAULT_RETRY_MS
    _connect_timeout_s: float = CONNECT_TIMEOUT_S
    _connected: bool = False  # a first connection got its 200
    #: The names of the crash ending's events delivered (each is delivered once).
    _crash_ending: set[str] = field(default_factory=set)

    @property
    def shown_url(self) -> str:
        """`url` for messages: without its query, where the run's stream token rides."""
        return urlunsplit(urlsplit(self.url)._replace(query="", fragment=""))

    @property
    def last_seq(self) -> int:
        parsed = parse_event_id(self.last_id) if self.last_id else None
        return parsed[1] if parsed is not None else 0

    async def events(self) -> AsyncGenerator[RunEvent, None]:
        """Every event after `last_id` up to and including `done`."""
        failing_since: float | None = None
        attempt = 0
        while True:
            try:
                async for event in self._connection():
                    failing_since, attempt = None, 0
                    self._connect_timeout_s = CONNECT_TIMEOUT_S
                    yield event
                    if event.is_final:
                        return
                return  # 204: the last event seen was the run's `done`
            except _Broken as exc:
                reason = str(exc)
            except (aiohttp.ClientError, TimeoutError) as exc:
                if not self._connected:
                    raise ServiceUnreachable(
                        f"cannot read {self.shown_url} ({describe(exc)}); is the service running?"
                    ) from exc
                reason = describe(exc)
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            left = self.give_up_after_s - (now - failing_since)
            if left <= 0:
                raise ServiceUnreachable(
                    f"gave up after {self.give_up_after_s:g} s without the stream ({reason}); "
                    f"the run may go on: resume with `research-service listen {self.shown_url}`"
                )
            # The last attempt is made when the time is up, not a whole backoff later.
            delay = min(self._backoff(attempt), left)
            self._connect_timeout_s = min(CONNECT_TIMEOUT_S, max(left - delay, MIN_CONNECT_S))
            attempt += 1
            self.reconnects += 1
            where = f"after event {self.last_id}" if self.last_id else "from the start"
            self.notify(f"connection lost ({reason}); reconnecting in {delay:.1f} s, {where}")
            await asyncio.sleep(delay)

    def _backoff(self, attempt: int) -> float:
        """The server's retry time, doubled per failed attempt, capped, with 10 % jitter."""
        first = max(self._retry_ms / 1000, MIN_BACKOFF_S)
        # Past the cap's doubling, the attempt no longer counts (nor overflows a float).
        base = min(first * 2.0 ** min(attempt, 64), MAX_BACKOFF_S)
        return base * random.uniform(0.9, 1.1)

    async def _connection(self) -> AsyncIterator[RunEvent]:
        headers = {"Accept": "text/event-stream", **authorization(self.api_key)}
        if self.last_id:
            headers["Last-Event-ID"] = self.last_id
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self._connect_timeout_s, sock_read=self.idle_timeout_s
        )
        async with self.session.get(self.url, headers=headers, timeout=timeout) as response:
            if response.status == 204:
                return
            if response.status != 200:
                answer = await read_answer(response)
                if response.status in RETRY_STATUSES:
                    raise _Broken(answer.detail)
                if response.status == 401 and answer.is_problem:
                    raise unauthorized(self.api_key)  # a revoked key: no reconnect mends it
                if answer.is_problem:
                    raise RunRefused(f"{self.shown_url}: {answer.detail}", status=response.status)
                raise refused(answer, what=self.shown_url)
            if response.content_type != "text/event-stream":
                raise NotAnEventStream(
                    f"{self.shown_url} answered {response.content_type}, not text/event-stream; "
                    "pass a research-service run id or its events URL"
                )
            self._connected = True
            parser = SSEParser()
            last_seq = self.last_seq
            async for chunk in response.content.iter_any():
                messages = parser.feed(chunk)
                if parser.retry is not None:
                    self._retry_ms = parser.retry
                for message in messages:
                    event = run_event(message)
                    crash_ending = event.ends_after_a_crash
                    if event.seq <= last_seq and not (
                        crash_ending and event.name not in self._crash_ending
                    ):
                        continue  # already delivered: never twice
                    if crash_ending:
                        self._crash_ending.add(event.name)
                    if event.seq > last_seq:
                        last_seq = event.seq
                        self.last_id = event.id
                    yield event
                    if event.is_final:
                        return
        raise _Broken("the server ended the stream before the run's done event")
