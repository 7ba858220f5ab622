"""Webhook sends shared fairly: the keys take turns, a key's hanging receivers hold at most its
share of the sends, and a free send is used at once. A real dispatcher over a real outbox
(memory and SQLite) sends to real receivers on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from research_service.webhooks.dispatcher import MAX_IN_FLIGHT, MAX_PER_KEY
from research_service.webhooks.outbox import BATCH
from tests.webhook_receiver import Receiver
from tests.webhook_sender import Sender, open_sender


@pytest.fixture(params=["memory", "sqlite"])
async def sender(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sender]:
    async with open_sender(str(request.param), tmp_path) as made:
        yield made


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
