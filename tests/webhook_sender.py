"""A real dispatcher over a real outbox (memory or SQLite), and runs whose end it owes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from research_service.events import Event
from research_service.reading.addresses import AllowList
from research_service.runs.log import EventLog
from research_service.runs.models import RunRecord
from research_service.stats import Stats
from research_service.webhooks.dispatcher import Dispatcher
from research_service.webhooks.outbox import Delivery, Outbox, new_delivery_id
from research_service.webhooks.service import outbox_for
from research_service.webhooks.signing import Signer, key_scope
from tests.test_event_log_contract import open_backend

DONE = {"status": "completed", "answer": "", "timings_ms": {"total": 1}}
#: Longer than any test waits: the dispatcher looks only when woken, and retries no sooner.
NEVER_S = 3600.0


@dataclass
class Sender:
    runs: EventLog
    outbox: Outbox
    dispatcher: Dispatcher
    made: int = 0

    async def owe(self, url: str, owner: str) -> str:
        """A finished run of `owner`'s whose end is owed to `url`."""
        self.made += 1
        run_id = f"{self.made:016x}"
        await self.runs.create_run(RunRecord(run_id, "Why share?", owner=owner))
        await self.outbox.add(
            [Delivery(new_delivery_id(), run_id, url, key_scope(owner), "http://s.test")]
        )
        await self.runs.append(Event.create(run_id, 1, "done", DONE, t_ms=1))
        return run_id


@asynccontextmanager
async def open_sender(store: str, tmp_path: Path) -> AsyncIterator[Sender]:
    """A sender on `store` that may reach loopback receivers; its dispatcher not started."""
    async with AsyncExitStack() as stack:
        runs = await open_backend(store, tmp_path)
        stack.push_async_callback(runs.close)
        outbox, _ = await outbox_for(runs)
        close = getattr(outbox, "close", None)
        if close is not None:
            stack.push_async_callback(close)
        dispatcher = Dispatcher(
            outbox=outbox,
            runs=runs,
            signer=Signer(signing_secret=lambda: b"s" * 32, configured=None),
            allow=AllowList.parse("127.0.0.1"),
            retry_s=NEVER_S,
            stats=Stats(),
            poll_s=NEVER_S,
        )
        stack.push_async_callback(dispatcher.close)
        yield Sender(runs, outbox, dispatcher)
