"""A burst's requests take turns before any of their work; the health probes never wait."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from research_service import loop_turns
from tests.conftest import Service
from tests.test_lifecycle import HeldGate
from tests.test_origin import EVIL, assert_problem

PROBES = ("/healthz", "/readyz", "/metrics")


async def test_a_request_waits_for_its_turn_before_it_is_even_checked(
    service: Service, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cross-site POST is refused by a check that runs once the request has its turn: under
    a burst, even the requests refused are taken a few per loop turn."""
    gate = HeldGate()
    monkeypatch.setattr(loop_turns, "SHARED", gate)
    refused = asyncio.create_task(
        client.post(service.url("/v1/runs"), json={"question": "Q?"}, headers={"Origin": EVIL})
    )
    async with asyncio.timeout(5):
        await gate.reached.wait()
    assert not refused.done()
    gate.opened.set()
    async with asyncio.timeout(5):
        assert_problem(await refused, 403, "cross-site-request")
    assert service.manager.active_runs == 0


@pytest.mark.parametrize("path", PROBES)
async def test_the_health_probes_are_answered_while_requests_wait_for_their_turn(
    service: Service, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    gate = HeldGate()
    monkeypatch.setattr(loop_turns, "SHARED", gate)
    listing = asyncio.create_task(client.get(service.url("/v1/runs")))
    async with asyncio.timeout(5):
        await gate.reached.wait()
        probe = await client.get(service.url(path))
    assert probe.status_code == 200, probe.text
    assert not listing.done(), "the listing did not wait for its turn"
    gate.opened.set()
    async with asyncio.timeout(5):
        listed = await listing
    assert listed.status_code == 200, listed.text
    assert listed.json()["runs"] == []
