"""Diagnostic (bench/README.md, issue 16): `POST /v1/runs` at a steady pace, a connection each.

`python bench/diagnostics/post_pace.py PORT RATE SECONDS` sends RATE posts a second for SECONDS
to 127.0.0.1:PORT (from the second core when there is one), each on a new connection, and
fails unless every answer is `201`.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aiohttp

BODY = {
    "question": "How does asyncio schedule callbacks and tasks?",
    "options": {"breadth": 3, "max_sources": 8},
}


async def pace(port: int, rate: float, seconds: float) -> int:
    """Send the posts; how many were answered `201`."""
    if len(os.sched_getaffinity(0)) > 1:
        os.sched_setaffinity(0, {1})
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post() -> None:
            async with session.post(f"http://127.0.0.1:{port}/v1/runs", json=BODY) as answer:
                text = await answer.text()
                if answer.status != 201:
                    raise RuntimeError(f"POST /v1/runs: {answer.status} {text[:200]}")

        began, count = time.monotonic(), int(rate * seconds)
        posts = []
        for i in range(count):
            await asyncio.sleep(max(0.0, began + i / rate - time.monotonic()))
            posts.append(asyncio.create_task(post()))
        await asyncio.gather(*posts)
    return count


if __name__ == "__main__":
    port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    print("answered", asyncio.run(pace(port, rate, seconds)))
