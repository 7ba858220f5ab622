"""--max-active-runs holds under a burst of concurrent creations, on the real SQLite store."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from tests.conftest import MakeService
from tests.test_api import assert_problem
from tests.test_auth import bearer

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


ALICE, BOB = "alice-secret-" + "a" * 32, "bob-secret-" + "b" * 32
PER_OWNER = 2


async def test_one_key_gets_at_most_its_share_and_the_others_still_get_theirs(
    make_service: MakeService, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
    service = await make_service(
        store="sqlite",
        auth="keys",
        api_keys_file=keys,
        max_active_runs=LIMIT,
        max_active_runs_per_owner=PER_OWNER,
    )
    service.llm.hold_after = 0
    async with httpx.AsyncClient(timeout=30.0, limits=httpx.Limits(max_connections=50)) as client:

        async def post(key: str, n: int) -> httpx.Response:
            body = {"question": f"Mine {n}?"}
            return await client.post(service.url("/v1/runs"), json=body, headers=bearer(key))

        # A burst from one key: exactly its share.
        burst = await asyncio.gather(*(post(ALICE, n) for n in range(20)))
        accepted = [r for r in burst if r.status_code == 201]
        assert len(accepted) == PER_OWNER
        for response in burst:
            if response.status_code != 201:
                detail = assert_problem(response, 429)["detail"]
                assert detail.startswith("'alice' has 2 runs active"), detail
                assert "--max-active-runs-per-owner" in detail
                assert response.headers["retry-after"] == "5"
        # Another key still gets its own share, and no more.
        theirs = [await post(BOB, n) for n in range(PER_OWNER + 1)]
        assert [r.status_code for r in theirs] == [201, 201, 429]
        assert service.manager.active_runs == 2 * PER_OWNER

        # Ended runs give their owner's slots back.
        held = [(r.json()["id"], ALICE) for r in accepted]
        held += [(r.json()["id"], BOB) for r in theirs[:PER_OWNER]]
        for run_id, key in held:
            url = service.url(f"/v1/runs/{run_id}/cancel")
            assert (await client.post(url, headers=bearer(key))).status_code == 202
        for run_id, _ in held:
            await service.wait_done(run_id)
        again = await asyncio.gather(*(post(ALICE, n) for n in range(PER_OWNER)))
        assert [r.status_code for r in again] == [201] * PER_OWNER
        service.llm.release.set()
        for response in again:
            await service.wait_done(response.json()["id"])


async def test_with_auth_off_the_per_owner_cap_counts_nobody(make_service: MakeService) -> None:
    # Every run of an open service is one user's: only --max-active-runs holds.
    service = await make_service(max_active_runs=LIMIT, max_active_runs_per_owner=1)
    service.llm.hold_after = 0
    async with httpx.AsyncClient(timeout=30.0) as client:
        created = [
            await client.post(service.url("/v1/runs"), json={"question": f"Open {n}?"})
            for n in range(3)
        ]
        assert [r.status_code for r in created] == [201] * 3
        service.llm.release.set()
        for response in created:
            await service.wait_done(response.json()["id"])
