"""Access control under a hostile or careless user: large keys files, role changes, sign-in
floods, secrets sent where they do not belong, lifetimes that do not fit a date."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx
import pytest

from research_service.auth import key_file, keyring
from research_service.auth.keyring import Keyring
from research_service.auth.sign_ins import SIGN_INS_PER_MINUTE
from research_service.errors import ConfigError
from research_service.settings import Settings
from tests.conftest import MakeService, Service
from tests.test_auth import (
    CUT_WITHIN_S,
    PROBLEMS,
    SESSION_COOKIE,
    bearer,
    following,
    poll,
    read_to_end,
    read_until,
)

ALICE = "alice-file-secret-" + "a" * 32
OPS = "ops-file-secret-" + "o" * 32


def keys_text(count: int) -> str:
    return "".join(f"user{n}:secret-of-user-{n:06d}-{'x' * 24}\n" for n in range(count))


async def test_a_large_keys_file_hashes_a_presented_key_once_whatever_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of file keys: a key is looked up, not compared line by line on the loop."""
    path = tmp_path / "keys.txt"
    path.write_text(keys_text(3000))
    ring = Keyring(store=None, file=path, id_key=b"signing secret")
    hashed: list[str] = []

    def counted(salt: bytes, secret: str) -> bytes:
        hashed.append(secret)
        return key_file.digest(salt, secret)

    monkeypatch.setattr(keyring, "digest", counted)
    found = await ring.authenticate(f"secret-of-user-002999-{'x' * 24}")
    assert found is not None
    assert found.name == "user2999"
    assert await ring.authenticate("not-a-key-" + "z" * 40) is None
    assert len(hashed) == 2  # one hash per request, not one per line
    assert await ring.usable(found.id) == found
    assert await ring.usable("file-000000000000") is None


def test_two_lines_with_one_secret_are_refused_naming_the_line() -> None:
    text = f"alice:{ALICE}\nbob:{ALICE}:admin\n"
    with pytest.raises(
        ConfigError, match=r"keys.txt line 2: 'bob' has the same secret as 'alice'; give each"
    ):
        key_file.parse(text, source="keys.txt", id_key=b"id")


def test_a_file_keys_id_changes_with_its_role_and_not_otherwise() -> None:
    (plain,) = key_file.parse(f"ops:{OPS}\n", source="k", id_key=b"id")
    (again,) = key_file.parse(f"ops : {OPS}\n", source="k", id_key=b"id")
    (admin,) = key_file.parse(f"ops:{OPS}:admin\n", source="k", id_key=b"id")
    assert plain.info.id == again.info.id
    assert admin.info.id != plain.info.id
    assert admin.info.admin


async def keyed_by_file(make_service: MakeService, path: Path) -> Service:
    """A service whose keys are `path`'s: alice's, and the admin ops's."""
    await asyncio.to_thread(path.write_text, f"alice:{ALICE}\nops:{OPS}:admin\n")
    return await make_service(auth="keys", api_keys_file=path)


async def test_an_admin_demoted_in_the_keys_file_loses_its_open_stream_of_anothers_run(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    path = tmp_path / "keys.txt"
    service = await keyed_by_file(make_service, path)
    service.llm.hold_after = 1
    created = await client.post(
        service.url("/v1/runs"), json={"question": "Whose run?"}, headers=bearer(ALICE)
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    await service.until_held()
    url = service.url(f"/v1/runs/{run_id}/events")
    async with following(url, bearer(OPS)) as ops, following(url, bearer(ALICE)) as alices:
        chunks = ops.aiter_raw()
        await read_until(chunks, b"event: phase")
        path.write_text(f"alice:{ALICE}\nops:{OPS}\n")  # the same secret, no longer admin
        async with asyncio.timeout(CUT_WITHIN_S):
            rest = await read_to_end(chunks)
        assert b"event: done" not in rest
        # The owner's own stream is left alone and reads on to the end.
        service.llm.release.set()
        async with asyncio.timeout(CUT_WITHIN_S):
            assert b"event: done" in await read_to_end(alices.aiter_raw())
    # Still a key, now an ordinary one: alice's run is not found, like an unknown id.
    who = await client.get(service.url("/v1/session"), headers=bearer(OPS))
    assert who.json() == {"auth": "keys", "name": "ops", "admin": False}
    assert (await client.get(url, headers=bearer(OPS))).status_code == 404


async def test_a_key_signing_in_more_than_a_minute_allows_gets_429_and_others_do_not(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    path = tmp_path / "keys.txt"
    service = await keyed_by_file(make_service, path)
    url = service.url("/v1/session")
    for _ in range(SIGN_INS_PER_MINUTE):
        signed_in = await client.post(url, json={"api_key": ALICE})
        assert signed_in.status_code == 200, signed_in.text
        assert (await client.delete(url)).status_code == 204
    refused = await client.post(url, json={"api_key": ALICE})
    assert refused.status_code == 429
    assert refused.headers["Content-Type"] == "application/problem+json"
    assert refused.json()["type"] == PROBLEMS + "too-many-sign-ins"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "keep its cookie" in refused.json()["detail"]
    assert SESSION_COOKIE not in refused.cookies
    # The key itself still works, and another key still signs in.
    assert (await client.get(url, headers=bearer(ALICE))).status_code == 200
    assert (await client.post(url, json={"api_key": OPS})).status_code == 200
    # A wrong key is a 401 as before, not counted against anyone.
    assert (await client.post(url, json={"api_key": "w" * 40})).status_code == 401


async def test_secrets_sent_in_any_query_spelling_or_in_the_referer_never_reach_the_log(
    tmp_path: Path,
    make_service: MakeService,
    client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    path = tmp_path / "keys.txt"
    path.write_text(f"alice:{ALICE}\n")
    service = await make_service(auth="keys", api_keys_file=path)
    created = await client.post(
        service.url("/v1/runs"), json={"question": "Logged?"}, headers=bearer(ALICE)
    )
    token = created.json()["events_url"].partition("token=")[2]
    store_key = "rsk_0123456789ab_" + "K" * 43
    sent = [
        ("/v1/runs", {"api_key": ALICE}, {}),
        ("/v1/runs", {"Api_Key": ALICE, "limit": "5"}, {}),
        (f"/v1/runs/{created.json()['id']}", {"Token": token}, {}),
        (f"/v1/runs/{created.json()['id']}", {"token[]": token}, {}),
        (f"/v1/runs/{created.json()['id']}", {"token\x00": token}, {}),
        ("/v1/runs", {"q": store_key}, {}),
        (f"/{store_key}", {}, {}),
        ("/healthz", {}, {"Referer": f"http://panel.example/runs/x?view=1&token={token}#top"}),
        ("/healthz", {}, {"Referer": f"http://panel.example/?KEY={ALICE}"}),
        ("/healthz", {}, {"Referer": f"http://panel.example/?tok%65n={token}"}),
        (f"/v1/runs?a=1;token={token}", {}, {}),
        ("/v1/runs", {"authorization": f"Bearer {ALICE}"}, {}),
    ]
    for where, params, headers in sent:
        await client.get(service.url(where), params=params or None, headers=headers)

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]

    async def all_logged() -> bool:
        return len(lines()) >= 1 + len(sent)

    await poll(all_logged, within=5)
    logged = "\n".join(lines())
    for secret in (ALICE, token.split(".")[-1], store_key[4:]):
        assert secret not in logged
    assert logged.count("REDACTED") >= len(sent)
    # What is no secret stays readable.
    assert "limit=5" in logged
    assert "view=1" in logged


@pytest.mark.parametrize("name", ["session_ttl_s", "stream_token_ttl_s", "review_timeout_s"])
def test_a_lifetime_past_a_year_is_refused_at_start_not_on_every_sign_in(name: str) -> None:
    """Its end is written as a date: 1e12 s would be past the year 9999 (a 500 each time)."""
    with pytest.raises(ConfigError, match=rf"{name} must be <= 31536000, got 1000000000000"):
        Settings(**{name: 1e12})
    assert getattr(Settings(**{name: 31536000.0}), name) == 31536000.0
