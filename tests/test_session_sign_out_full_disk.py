"""Signing out on a really full disk (a small tmpfs under a real `serve`): refused, never lost.

A sign-out the run store cannot record must not look done: the answer is a 503 that leaves the
cookie in place, so the panel stays signed in and signing out again ends the session once
there is room. Sessions ended before the disk filled stay ended.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.full_disk import fill, free, small_disk
from tests.served import CORPUS, Served, start, stop
from tests.test_auth import SESSION_COOKIE, cookie
from tests.test_session_sign_out import sign_in, sign_out

#: Sign-outs tried on the full disk before one must be refused (the journal has some slack).
MAX_SIGN_OUTS = 400


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk") as mounted:
        yield mounted


async def whoami(client: httpx.AsyncClient, served: Served, value: str) -> int:
    return (await client.get(f"{served.base}/v1/session", headers=cookie(value))).status_code


async def test_a_sign_out_the_full_disk_cannot_record_is_a_503_that_keeps_the_session(
    disk: Path, tmp_path: Path
) -> None:
    key = secrets.token_urlsafe(32)
    keys = tmp_path / "keys"  # beside the disk: the keys file is only read
    keys.write_text(f"alice:{key}\n", encoding="utf-8")
    served = await start(
        *("--port", "0", "--data-dir", str(disk / "data")),
        *("--corpus", str(CORPUS), "--auth", "keys", "--api-keys-file", str(keys)),
        timeout=60,
    )
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            before = await sign_in(client, served.base, key)
            assert (await sign_out(client, served.base, before)).status_code == 204

            await fill(disk)
            refused: tuple[str, httpx.Response] | None = None
            for _ in range(MAX_SIGN_OUTS):
                value = await sign_in(client, served.base, key)  # signing in writes nothing
                response = await sign_out(client, served.base, value)
                if response.status_code != 204:
                    refused = value, response
                    break
            assert refused is not None, "every sign-out was recorded on a full disk"
            value, response = refused
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["retry-after"]
            assert "is full" in response.json()["detail"]
            # Not cleared: the browser stays signed in, and can sign out again.
            assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
            assert await whoami(client, served, value) == 200
            assert await whoami(client, served, before) == 401  # ended before: still ended
            assert (await client.get(f"{served.base}/healthz")).status_code == 200

            await free(disk)
            assert (await sign_out(client, served.base, value)).status_code == 204
            assert await whoami(client, served, value) == 401
    finally:
        await stop(served)
