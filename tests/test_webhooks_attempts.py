"""What one webhook attempt makes of the URL's check at send time. A real dispatcher over a
real outbox (memory and SQLite); the names end in `.invalid`, which never resolve (RFC 2606)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from research_service.webhooks.outbox import Delivery
from tests.webhook_sender import NEVER_S, Sender, open_sender


@pytest.fixture(params=["memory", "sqlite"])
async def sender(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sender]:
    async with open_sender(str(request.param), tmp_path) as made:
        yield made


def saves(sender: Sender) -> asyncio.Queue[Delivery]:
    """Every delivery the dispatcher records from now on, once recorded."""
    recorded: asyncio.Queue[Delivery] = asyncio.Queue()
    outbox = sender.dispatcher.outbox
    save = outbox.save

    async def recording(delivery: Delivery, *, hold_until: float | None = None) -> None:
        await save(delivery, hold_until=hold_until)
        recorded.put_nowait(delivery)

    outbox.save = recording  # type: ignore[method-assign]
    return recorded


async def test_a_name_that_does_not_resolve_at_send_time_is_a_failed_attempt_retried(
    sender: Sender, caplog: pytest.LogCaptureFixture
) -> None:
    """The URL passed its check when the run was made; by the attempt its name no longer
    resolves (a DNS outage, a lapsed domain). That is a failed attempt, as a refused connection
    is: counted, recorded with why, and tried again on schedule; not an error that leaves the
    delivery held and never counted."""
    run_id = await sender.owe("http://receiver.invalid/hook", "alice")
    recorded = saves(sender)
    began = time.time()
    with caplog.at_level(logging.INFO, logger="research_service.webhooks"):
        await sender.dispatcher.start(sole_sender=True)
        attempt = await asyncio.wait_for(recorded.get(), timeout=10)

    assert (attempt.run_id, attempt.state, attempt.attempts) == (run_id, "pending", 1)
    assert attempt.last_error is not None
    assert "receiver.invalid does not resolve" in attempt.last_error
    assert began + NEVER_S <= attempt.next_at <= time.time() + NEVER_S
    (stored,) = await sender.outbox.of_run(run_id)
    assert (stored.state, stored.attempts, stored.last_error) == ("pending", 1, attempt.last_error)
    assert sender.dispatcher.stats.webhook_attempts["failed"] == 1
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("attempt 1 failed" in r.getMessage() for r in caplog.records)


async def test_a_url_the_guard_refuses_at_send_time_fails_at_once_and_is_counted(
    sender: Sender,
) -> None:
    """A name that now resolves somewhere private (DNS rebinding) is refused: the delivery
    fails for good on that attempt, and the attempt counts as failed."""
    run_id = await sender.owe("http://10.0.0.1:9/hook", "alice")  # private: not allowed
    recorded = saves(sender)
    await sender.dispatcher.start(sole_sender=True)
    attempt = await asyncio.wait_for(recorded.get(), timeout=10)

    assert (attempt.run_id, attempt.state, attempt.attempts) == (run_id, "failed", 1)
    assert attempt.last_error is not None
    assert "is refused" in attempt.last_error
    assert sender.dispatcher.stats.webhook_attempts["failed"] == 1
