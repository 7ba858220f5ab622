"""Sends the outbox's deliveries once their runs have ended, retrying for a day.

One loop per process looks at the outbox every POLL_S: a due delivery whose run has ended is
claimed (held for HOLD_S, so no other process sends it meanwhile) and tried once; the keys
take turns in each look, and one key has at most MAX_PER_KEY sends under way. A failure
(an answer other than 2xx, a timeout, a refused connection) is written to the outbox with the
time of the next attempt, capped exponential backoff (--webhook-retry-s, doubling, at most
MAX_WAIT_S apart) until a day after the first attempt, and the delivery is held until then.
The wait is spent in the outbox, not in one of the MAX_IN_FLIGHT sends: receivers that fail
for a day hold no send between their attempts, so other receivers' deliveries keep going. A
process that stops leaves every delivery for the next one: delivered at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Final

import aiohttp
from yarl import URL

from research_service import __version__
from research_service.errors import StoreUnavailable
from research_service.events import dumps
from research_service.outage import Outage
from research_service.reading.addresses import AllowList
from research_service.reading.errors import PageRefused, PageUnreachable
from research_service.reading.ssrf import GuardedResolver, UrlGuard
from research_service.runs.log import EventLog
from research_service.stats import Stats
from research_service.webhooks.notification import notification
from research_service.webhooks.outbox import Delivery, Outbox
from research_service.webhooks.signing import SERVER_SCOPE, Signer

log = logging.getLogger(__name__)

POLL_S: Final = 1.0
#: How long a claim holds a delivery beyond its next attempt (longer than an attempt).
HOLD_S: Final = 60.0
#: Retries stop this long after the first attempt.
RETRY_FOR_S: Final = 24 * 3600.0
MAX_WAIT_S: Final = 3600.0
ATTEMPT_TIMEOUT_S: Final = 10.0
#: Deliveries sent at once by one process.
MAX_IN_FLIGHT: Final = 32
#: One API key's deliveries sent at once by one process: a key whose receivers hang (each
#: attempt then takes ATTEMPT_TIMEOUT_S) leaves the other sends to everyone else. The server's
#: own (--webhook-url, and every run under --auth none) are not capped.
MAX_PER_KEY: Final = 8
USER_AGENT: Final = f"research-service/{__version__} (webhooks)"


class DeliveryFailed(Exception):
    """An attempt the receiver did not take: retried."""


def backoff(first_s: float, attempt: int) -> float:
    """The wait after the `attempt`-th failed attempt (1, 2, …): doubling, capped."""
    return float(min(MAX_WAIT_S, first_s * 2.0 ** (attempt - 1)))


class Dispatcher:
    """The process's sender of webhooks (start, then close)."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        runs: EventLog,
        signer: Signer,
        allow: AllowList,
        retry_s: float,
        stats: Stats,
        poll_s: float = POLL_S,
    ) -> None:
        self.outbox = outbox
        self.runs = runs
        self.signer = signer
        self.allow = allow
        self.retry_s = retry_s
        self.stats = stats
        self.poll_s = poll_s
        self._sending: dict[str, asyncio.Task[None]] = {}
        #: The sends under way, by scope (an API key's, or the server's).
        self._of_scope: Counter[str] = Counter()
        self._loop_task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        #: Wakes the loop for the soonest retry this process has scheduled.
        self._retry_timer: asyncio.TimerHandle | None = None
        #: Whether this process is the only one making and sending deliveries.
        self._sole = True

    async def start(self, *, sole_sender: bool) -> None:
        """Start looking at the outbox; a sole sender first drops holds a stopped one left."""
        self._sole = sole_sender
        if sole_sender:
            await self.outbox.release()
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.allow), limit=MAX_IN_FLIGHT)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S),
            headers={"User-Agent": USER_AGENT, "Content-Type": "application/json"},
        )
        self._loop_task = asyncio.create_task(self._watch(), name="webhooks")

    def nudge(self) -> None:
        """Look at the outbox now (a run has just ended here)."""
        self._wake.set()

    def _nudge_at(self, when: float) -> None:
        """Look at the outbox at `when` (Unix time), when a retry falls due, not a poll later."""
        loop = asyncio.get_running_loop()
        at = loop.time() + max(0.0, when - time.time()) + 0.001  # not a hair early
        timer = self._retry_timer
        if timer is not None and loop.time() < timer.when() <= at:
            return  # a sooner look is already to come
        if timer is not None:
            timer.cancel()
        self._retry_timer = loop.call_at(at, self.nudge)

    async def close(self) -> None:
        """Stop sending; deliveries under way are left to the next process."""
        if self._retry_timer is not None:
            self._retry_timer.cancel()
        tasks = [t for t in (self._loop_task, *self._sending.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._session is not None:
            await self._session.close()

    async def _watch(self) -> None:
        outage = Outage("webhooks: cannot look at the outbox")
        while True:
            idle = False
            try:
                await self._send_due()
                # A sole sender with nothing pending has nothing to look for until this
                # process makes a delivery (`nudge`): no polling for a service without webhooks.
                idle = self._sole and not self._sending and not await self.outbox.pending()
                outage.ok()
            except StoreUnavailable as exc:
                outage.failed(exc)
            except Exception:
                log.exception("webhooks: looking at the outbox failed; trying again")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if idle else self.poll_s):
                    await self._wake.wait()
            self._wake.clear()

    async def _send_due(self) -> None:
        now = time.time()
        due = [d for d in await self.outbox.due(now=now) if d.id not in self._sending]
        if not due:
            return
        tails = await self.runs.tails(sorted({d.run_id for d in due}))
        for delivery in due:
            if len(self._sending) >= MAX_IN_FLIGHT:
                return
            tail = tails.get(delivery.run_id)
            if tail is not None and tail.end is None:
                continue  # the run goes on: nothing to say yet
            scope = delivery.scope
            if scope != SERVER_SCOPE and self._of_scope[scope] >= MAX_PER_KEY:
                continue  # the key's share of the sends is taken: the others' turn
            if not await self.outbox.claim(delivery.id, now=now, until=now + HOLD_S):
                continue  # another process sends it
            task = asyncio.create_task(self._send(delivery), name=f"webhook-{delivery.id}")
            self._sending[delivery.id] = task
            self._of_scope[scope] += 1
            task.add_done_callback(functools.partial(self._sent, scope))

    def _sent(self, scope: str, task: asyncio.Task[None]) -> None:
        key = task.get_name().removeprefix("webhook-")
        self._sending.pop(key, None)
        self._of_scope[scope] -= 1
        if not self._of_scope[scope]:
            del self._of_scope[scope]
        # A send is free: look again now, not a poll later, so deliveries waiting for one go
        # as fast as the receivers answer (the looks coalesce into one while one is under way).
        self._wake.set()
        error = None if task.cancelled() else task.exception()
        if isinstance(error, StoreUnavailable):
            # The delivery stays held until its hold runs out, then is tried again.
            log.warning("webhooks: %s could not be recorded (%s)", key, error)
        elif error is not None:
            log.error("webhooks: sending %s failed", key, exc_info=error)

    async def _send(self, delivery: Delivery) -> None:
        body = await self._body(delivery)
        if body is None:
            await self._end(delivery, "failed", "the run is gone (deleted by retention)")
            return
        first = delivery.first_tried_at or time.time()
        delivery = replace(delivery, first_tried_at=first)
        deadline = first + RETRY_FOR_S
        tries = delivery.attempts + 1
        # One attempt per claim: the wait before the next one is spent in the outbox (next_at),
        # not in one of the MAX_IN_FLIGHT slots, so a receiver that fails for a day holds no
        # slot between its attempts and other receivers' deliveries keep going.
        try:
            await self._attempt(delivery, body)
        except PageRefused as exc:
            await self._end(replace(delivery, attempts=tries), "failed", str(exc))
            return
        except DeliveryFailed as exc:
            now = time.time()
            pause = min(backoff(self.retry_s, tries), deadline - now)
            if pause <= 0:
                await self._end(replace(delivery, attempts=tries), "failed", str(exc))
                return
            delivery = replace(delivery, attempts=tries, next_at=now + pause, last_error=str(exc))
            # Held until it is due: the look at the outbox then sends it again.
            await self.outbox.save(delivery, hold_until=delivery.next_at)
            self._nudge_at(delivery.next_at)
            log.info(
                "webhook %s of run %s: attempt %d failed (%s); again in %.1f s",
                delivery.id,
                delivery.run_id,
                tries,
                exc,
                pause,
            )
            return
        await self._end(replace(delivery, attempts=tries), "delivered", None)

    async def _body(self, delivery: Delivery) -> str | None:
        record = await self.runs.get_run(delivery.run_id)
        tails = await self.runs.tails([delivery.run_id])
        tail = tails.get(delivery.run_id)
        if record is None or tail is None or tail.end is None:
            return None
        events = await self.runs.read(record.id, after=tail.event_count - 1)
        if not events or events[-1].name != "done":
            return None
        return dumps(notification(delivery, record, events[-1]))

    async def _attempt(self, delivery: Delivery, body: str) -> None:
        assert self._session is not None
        headers = self.signer.headers(
            msg_id=delivery.id, body=body, scope=delivery.scope, now=time.time()
        )
        try:
            # Checked again at every attempt (DNS rebinding). A name that does not resolve
            # now (a DNS outage, a lapsed domain) is a failed attempt, retried on schedule.
            await UrlGuard(self.allow).check(URL(delivery.url))
            async with self._session.post(
                delivery.url, data=body.encode(), headers=headers, allow_redirects=False
            ) as response:
                if not 200 <= response.status < 300:
                    raise DeliveryFailed(f"the receiver answered HTTP {response.status}")
        except PageRefused:
            self.stats.webhook_attempts["failed"] += 1
            raise
        except DeliveryFailed:
            self.stats.webhook_attempts["failed"] += 1
            raise
        except PageUnreachable as exc:
            self.stats.webhook_attempts["failed"] += 1
            raise DeliveryFailed(str(exc)) from None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.stats.webhook_attempts["failed"] += 1
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from None
        self.stats.webhook_attempts["ok"] += 1

    async def _end(self, delivery: Delivery, state: str, error: str | None) -> None:
        ended = replace(delivery, state=state, last_error=error)  # type: ignore[arg-type]
        await self.outbox.save(ended)
        self.stats.webhooks_ended[state] += 1
        level = logging.INFO if state == "delivered" else logging.WARNING
        log.log(
            level,
            "webhook %s of run %s %s after %d attempt(s)%s",
            ended.id,
            ended.run_id,
            state,
            ended.attempts,
            "" if error is None else f": {error}",
        )
