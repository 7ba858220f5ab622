"""--max-active-runs holds under a burst of concurrent creations, on the real SQLite store."""

from __future__ import annotations

import asyncio
import re

import httpx

from tests.conftest import MakeService
from tests.test_api import assert_problem

LIMIT = 8
BURST = 100


async def test_a_burst_of_creations_gets_exactly_the_limit_and_429_for_the_rest(
    make_service: MakeService,
) -> None:
    # The SQLite store's create_run awaits a worker thread: the window a burst slipped through.
    service = await make_service(store="sqlite", max_active_runs=LIMIT)
    service.llm.hold_after = 0
    limits = httpx.Limits(max_connections=2 * BURST)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:

        async def post(n: int) -> httpx.Response:
            return await client.post(service.url("/v1/runs"), json={"question": f"Burst {n}?"})

        async def one_shot(n: int) -> tuple[int, httpx.Headers, bytes]:
            url = service.url("/v1/research")
            async with client.stream("GET", url, params={"q": f"One-shot {n}?"}) as response:
                if response.status_code != 200:
                    return response.status_code, response.headers, await response.aread()
                # A stream started: its run holds a slot until released below.
                async for _ in response.aiter_bytes():
                    break
                return 200, response.headers, b""

        posts = [asyncio.create_task(post(n)) for n in range(BURST)]
        shots = [asyncio.create_task(one_shot(n)) for n in range(BURST // 4)]
        created = await asyncio.gather(*posts)
        streamed = await asyncio.gather(*shots)

        accepted = [r for r in created if r.status_code == 201]
        started = [s for s in streamed if s[0] == 200]
        assert 1 <= len(accepted) + len(started) <= LIMIT
        assert service.manager.active_runs == len(accepted) + len(started)
        for response in created:
            if response.status_code != 201:
                assert_problem(response, 429)
                assert re.fullmatch(r"[1-9][0-9]*", response.headers["retry-after"])
        for status, headers, body in streamed:
            if status != 200:
                assert status == 429
                assert headers["content-type"] == "application/problem+json"
                assert b"limit is 8" in body
                assert re.fullmatch(r"[1-9][0-9]*", headers["retry-after"])

        # The held runs finish; their slots are given back and new runs are accepted again.
        service.llm.release.set()
        for response in accepted:
            await service.wait_done(response.json()["id"])
        async with asyncio.timeout(10):
            while service.manager.active_runs:  # noqa: ASYNC110 - one-shot runs end on their own
                await asyncio.sleep(0.01)
        again = await asyncio.gather(*(post(n) for n in range(LIMIT)))
        assert [r.status_code for r in again] == [201] * LIMIT
        for response in again:
            await service.wait_done(response.json()["id"])
