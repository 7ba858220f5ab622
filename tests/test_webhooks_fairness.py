"""Webhook sends shared fairly: the keys take turns, a key's hanging receivers hold at most its
share of the sends, and a free send is used at once. A real dispatcher over a real outbox
(memory and SQLite) sends to real receivers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from research_service.events import Event
from research_service.reading.addresses import AllowList
from research_service.runs.log import EventLog
from research_service.runs.models import RunRecord
from research_service.stats import Stats
from research_service.webhooks.dispatcher import MAX_IN_FLIGHT, MAX_PER_KEY, Dispatcher
from research_service.webhooks.outbox import BATCH, Delivery, Outbox, new_delivery_id
from research_service.webhooks.service import outbox_for
from research_service.webhooks.signing import Signer, key_scope
from tests.test_event_log_contract import open_backend
from tests.webhook_receiver import Receiver

DONE = {"status": "completed", "answer": "", "timings_ms": {"total": 1}}
#: Longer than any test waits: the dispatcher looks only when woken.
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


@pytest.fixture(params=["memory", "sqlite"])
async def sender(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sender]:
    async with AsyncExitStack() as stack:
        runs = await open_backend(str(request.param), tmp_path)
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
        yield Sender(runs, outbox, dispatcher)
        await dispatcher.close()


async def test_a_key_whose_receivers_hang_leaves_the_other_sends_to_everyone_else(
    sender: Sender,
) -> None:
    """Alice owes more webhooks to a hanging receiver than a process sends at once; each
    attempt holds a send for 10 s. Bob's, owed once hers are under way, is sent at once."""
    async with Receiver() as hanging, Receiver() as bob:
        hanging.hang = True
        for _ in range(MAX_IN_FLIGHT + 8):
            await sender.owe(hanging.url(), "alice")
        await sender.dispatcher.start(sole_sender=True)
        await hanging.wait_for(MAX_PER_KEY)
        bob_s = await sender.owe(bob.url(), "bob")
        sender.dispatcher.nudge()  # as a run's creation does
        (got,) = await bob.wait_for(1, timeout=5)
        assert got.json["data"]["run_id"] == bob_s
        assert hanging.most_held == MAX_PER_KEY


async def test_a_free_send_takes_the_next_delivery_at_once(sender: Sender) -> None:
    """More of one key's deliveries than a process sends at once, and no poll for an hour:
    each one done starts the next."""
    async with Receiver() as receiver:
        # More than one look hands out, too: with SQLite, sends end while a look still claims.
        owed = [await sender.owe(receiver.url(), "alice") for _ in range(BATCH + MAX_IN_FLIGHT)]
        await sender.dispatcher.start(sole_sender=True)
        got = await receiver.wait_for(len(owed), timeout=30)
        assert sorted(r.json["data"]["run_id"] for r in got) == owed
