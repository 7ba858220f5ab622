"""Signing out ends the session on the server: a copy of the cookie is refused from then on.

Over real HTTP against the in-process service (SQLite and memory run stores), and against a
real `research-service serve` process that is restarted on the same data folder.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from pathlib import Path

import httpx

from research_service.auth.ended_sessions_sqlite import SqliteEndedSessions
from research_service.auth.key_store import SqliteKeys
from research_service.auth.tokens import Signer, new_session_id
from research_service.runs.sqlite_db import RUN_STORE_FILE
from tests import test_auth
from tests.conftest import MakeService
from tests.served import CORPUS, start, stop
from tests.test_auth import (
    CUT_WITHIN_S,
    REALM,
    SECRET,
    SESSION_COOKIE,
    Keyed,
    assert_problem,
    assert_unauthorized,
    bearer,
    cookie,
    following,
    held,
    make_keys,
    poll,
    read_to_end,
    read_until,
    set_cookie,
)

keyed = test_auth.keyed

ENDED = "the session has ended; sign in again"
#: Answers to DELETE /v1/session that tell one cookie from another if they differ.
SAME_FOR_EVERY_COOKIE = ("status_code", "content", "set-cookie")


async def sign_in(client: httpx.AsyncClient, base: str, key: str) -> str:
    """A fresh session cookie's value for `key`."""
    response = await client.post(f"{base}/v1/session", json={"api_key": key})
    assert response.status_code == 200, response.text
    value, _ = set_cookie(response)
    # Sent only where a test says so: the shared client's jar would add it to every request.
    client.cookies.clear()
    return value


async def sign_out(client: httpx.AsyncClient, base: str, value: str | None) -> httpx.Response:
    """DELETE /v1/session with cookie `value` (or none)."""
    headers = cookie(value) if value is not None else {}
    return await client.delete(f"{base}/v1/session", headers=headers)


def assert_ended(response: httpx.Response) -> None:
    """A 401 problem+json saying the session has ended."""
    assert assert_unauthorized(response, REALM) == ENDED


def base_of(keyed: Keyed) -> str:
    return keyed.url("/").rstrip("/")


async def test_a_copy_of_a_signed_out_cookie_is_refused_wherever_it_worked(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    base = base_of(keyed)
    value = await sign_in(client, base, keyed.alice)
    copy = str(value)  # another tab's jar, or a thief's
    created = await client.post(
        keyed.url("/v1/runs"), json={"question": "Signed in?"}, headers=cookie(copy)
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    # No stream token for a session: it would outlive the sign-out (it names the key only).
    # The cookie opens the stream, as it opens everything else.
    assert created.json()["events_url"] == f"/v1/runs/{run_id}/events"
    await keyed.service.wait_done(run_id)
    snapshot = await client.get(keyed.url(f"/v1/runs/{run_id}"), headers=cookie(copy))
    assert snapshot.json()["events_url"] == f"/v1/runs/{run_id}/events"
    opened = [
        ("GET", "/v1/session"),
        ("GET", "/v1/runs"),
        ("GET", f"/v1/runs/{run_id}"),
        ("GET", f"/v1/runs/{run_id}/events"),
        ("GET", f"/v1/runs/{run_id}/recording"),
        ("POST", "/v1/runs"),
    ]
    body = {"question": "Still signed in?"}
    for method, path in opened:
        response = await client.request(
            method, keyed.url(path), headers=cookie(copy), json=body if method == "POST" else None
        )
        assert response.status_code in (200, 201), (path, response.text)

    signed_out = await sign_out(client, base, value)
    assert signed_out.status_code == 204
    cleared, attributes = set_cookie(signed_out)
    assert cleared in ("", '""')
    assert "max-age=0" in attributes

    for method, path in opened:
        response = await client.request(
            method, keyed.url(path), headers=cookie(copy), json=body if method == "POST" else None
        )
        assert_ended(response)
    # Signing out again with it changes nothing, and says nothing.
    assert (await sign_out(client, base, copy)).status_code == 204
    # A fresh sign-in with the same key is a new session, which works.
    fresh = await sign_in(client, base, keyed.alice)
    assert fresh != copy
    who = await client.get(keyed.url("/v1/session"), headers=cookie(fresh))
    assert who.json() == {"auth": "keys", "name": "alice", "admin": False}
    assert_ended(await client.get(keyed.url("/v1/runs"), headers=cookie(copy)))


async def test_signing_out_leaves_other_sessions_alone(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    """Another user's session, and the same user's session in another browser, go on."""
    base = base_of(keyed)
    leaving = await sign_in(client, base, keyed.alice)
    other_browser = await sign_in(client, base, keyed.alice)
    bobs = await sign_in(client, base, keyed.bob)
    assert (await sign_out(client, base, leaving)).status_code == 204
    assert_ended(await client.get(keyed.url("/v1/runs"), headers=cookie(leaving)))
    for value, name in ((other_browser, "alice"), (bobs, "bob")):
        who = await client.get(keyed.url("/v1/session"), headers=cookie(value))
        assert who.status_code == 200, who.text
        assert who.json()["name"] == name
        assert (await client.get(keyed.url("/v1/runs"), headers=cookie(value))).status_code == 200


async def test_signing_out_cuts_the_sessions_open_streams_at_once(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    held(keyed)
    base = base_of(keyed)
    leaving = await sign_in(client, base, keyed.alice)
    staying = await sign_in(client, base, keyed.alice)
    created = await keyed.create(client, keyed.alice)
    await keyed.service.until_held()
    url = keyed.url(f"/v1/runs/{created['id']}/events")
    async with following(url, cookie(leaving)) as cut, following(url, cookie(staying)) as kept:
        cut_chunks, kept_chunks = cut.aiter_raw(), kept.aiter_raw()
        await read_until(cut_chunks, b"event: phase")
        await read_until(kept_chunks, b"event: phase")
        assert (await sign_out(client, base, leaving)).status_code == 204
        # Cut by the sign-out itself (this process), not by a later check.
        async with asyncio.timeout(1.0):
            rest = await read_to_end(cut_chunks)
        assert b"event: done" not in rest
        keyed.service.llm.release.set()
        async with asyncio.timeout(CUT_WITHIN_S):
            kept_rest = await read_to_end(kept_chunks)
        assert b"event: done" in kept_rest
    assert_ended(await client.get(url, headers=cookie(leaving)))


def old_release_cookie(key_id: str, expires: int) -> str:
    """A cookie as the release before session ids signed it: `key.expires.signature`."""
    payload = f"{key_id}.{expires}"
    mac = hmac.new(SECRET.encode(), f"session\n{payload}".encode(), hashlib.sha256).digest()
    return f"{payload}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')[:43]}"


def forgeries(real: str) -> list[str]:
    """Cookies that grant nothing: garbled, re-signed wrongly, huge, or of another purpose."""
    key_id, session_id, expires, signature = real.split(".")
    flipped = "A" if signature[-1] != "A" else "B"
    return [
        "nonsense",
        "...",
        f"{key_id}.{session_id}.{expires}.{signature[:-1]}{flipped}",
        f"{key_id}.{'0' * len(session_id)}.{expires}.{signature}",
        Signer(b"another-secret-" + b"y" * 32).session(key_id=key_id, expires=int(expires)),
        Signer(SECRET.encode()).session(key_id=key_id, expires=int(time.time()) - 1),
        Signer(SECRET.encode()).stream_token(run_id="0" * 16, key_id=key_id, expires=int(expires)),
        f"{real}.{signature}",
        "x" * 7000,  # huge, within the 8190-byte header limit
    ]


async def test_delete_without_a_usable_cookie_is_the_same_harmless_204(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    """It ends nothing and answers exactly as a real sign-out does: no oracle."""
    base = base_of(keyed)
    value = await sign_in(client, base, keyed.alice)
    answers = [await sign_out(client, base, None)]
    for forged in forgeries(value):
        answers.append(await sign_out(client, base, forged))
    for answer in answers:
        assert answer.status_code == 204
        assert answer.content == b""
    shapes = {tuple(answer.headers.get_list("Set-Cookie")) for answer in answers}
    assert len(shapes) == 1, shapes
    # The real session went on through all of it...
    assert (await client.get(keyed.url("/v1/runs"), headers=cookie(value))).status_code == 200
    # ...and its own sign-out answers the same.
    real = await sign_out(client, base, value)
    assert (real.status_code, real.content) == (204, b"")
    assert {tuple(real.headers.get_list("Set-Cookie"))} == shapes
    assert_ended(await client.get(keyed.url("/v1/runs"), headers=cookie(value)))


async def test_a_cookie_over_the_header_limit_is_refused_unread(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    base = base_of(keyed)
    value = await sign_in(client, base, keyed.alice)
    huge = await client.delete(keyed.url("/v1/session"), headers=cookie(value + "A" * 20_000))
    assert_problem(huge, 431, "request-too-large")
    assert (await client.get(keyed.url("/v1/runs"), headers=cookie(value))).status_code == 200
    # Refused unread, it ended nothing: the real cookie's own sign-out still ends it.
    assert (await sign_out(client, base, value)).status_code == 204
    assert_ended(await client.get(keyed.url("/v1/runs"), headers=cookie(value)))


async def test_a_cross_site_sign_out_is_refused_and_ends_nothing(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    """Another site's page cannot sign a user out (403), with an Origin or without one."""
    base = base_of(keyed)
    value = await sign_in(client, base, keyed.alice)
    for other in ({"Origin": "https://attacker.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = await client.delete(keyed.url("/v1/session"), headers=cookie(value) | other)
        assert_problem(refused, 403, "cross-site-request")
        assert "set-cookie" not in refused.headers
        assert (await client.get(keyed.url("/v1/runs"), headers=cookie(value))).status_code == 200
    # The panel's own page (same origin) signs out.
    own = {"Origin": base, "Sec-Fetch-Site": "same-origin"}
    assert (
        await client.delete(keyed.url("/v1/session"), headers=cookie(value) | own)
    ).status_code == 204
    assert_ended(await client.get(keyed.url("/v1/runs"), headers=cookie(value)))


async def test_a_cookie_of_the_release_before_session_ids_must_sign_in_again(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    value = await sign_in(client, base_of(keyed), keyed.alice)
    key_id, _, expires, _ = value.split(".")
    old = old_release_cookie(key_id, int(expires))
    for path in ("/v1/runs", "/v1/session"):
        assert_ended(await client.get(keyed.url(path), headers=cookie(old)))
    assert (await sign_out(client, base_of(keyed), old)).status_code == 204


async def test_with_the_memory_store_signing_out_ends_the_session_too(
    make_service: MakeService, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    keys = tmp_path / "keys.txt"
    alice = "alice-secret-" + "a" * 32
    keys.write_text(f"alice:{alice}\n")
    service = await make_service(store="memory", auth="keys", api_keys_file=keys, secret=SECRET)
    base = service.url("/").rstrip("/")
    value = await sign_in(client, base, alice)
    assert (await client.get(service.url("/v1/runs"), headers=cookie(value))).status_code == 200
    assert (await sign_out(client, base, value)).status_code == 204
    assert_ended(await client.get(service.url("/v1/runs"), headers=cookie(value)))
    assert (await client.get(service.url("/v1/runs"), headers=bearer(alice))).status_code == 200


async def test_a_signed_out_session_stays_ended_after_a_restart(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """A real `serve` process on a SQLite data folder, stopped and started again."""
    data = tmp_path / "data"
    keys = SqliteKeys(data / RUN_STORE_FILE)
    try:
        _, alice = keys.create("alice", admin=False)
    finally:
        keys.close()
    args = ("--auth", "keys", "--store", "sqlite", "--corpus", str(CORPUS))
    env = {"RESEARCH_DATA_DIR": str(data), "RESEARCH_SECRET": SECRET}

    first = await start("--port", "0", *args, env=env)
    try:
        base = first.base.rstrip("/")
        ended = await sign_in(client, base, alice)
        kept = await sign_in(client, base, alice)
        assert (await sign_out(client, base, ended)).status_code == 204
        assert_ended(await client.get(f"{base}/v1/runs", headers=cookie(ended)))
    finally:
        assert await stop(first) == 0

    second = await start("--port", "0", *args, env=env)
    try:
        base = second.base.rstrip("/")
        assert_ended(await client.get(f"{base}/v1/runs", headers=cookie(ended)))
        assert_ended(await client.get(f"{base}/v1/session", headers=cookie(ended)))
        assert (await client.get(f"{base}/v1/runs", headers=cookie(kept))).status_code == 200
        fresh = await sign_in(client, base, alice)
        assert (await client.get(f"{base}/v1/runs", headers=cookie(fresh))).status_code == 200
    finally:
        assert await stop(second) == 0


async def test_the_service_forgets_ended_sessions_once_they_have_expired(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    """Purged at start (and every 10 minutes after): the table does not grow without bound."""
    store = tmp_path / "data" / RUN_STORE_FILE
    keys, alice, _, _ = make_keys(store)
    ended = SqliteEndedSessions(store)
    try:
        now = int(time.time())
        expired, live = new_session_id(), new_session_id()
        await ended.end(expired, expires=now - 1)
        await ended.end(live, expires=now + 600)
        service = await make_service(store="sqlite", auth="keys", secret=SECRET)

        async def forgotten() -> bool:
            return not await ended.ended([expired])

        await poll(forgotten, within=5.0)
        assert await ended.ended([expired, live]) == {live}
        # The one not yet expired stays refused: a cookie of that session gets a 401.
        key_id = (await sign_in(client, service.url("/").rstrip("/"), alice)).split(".")[0]
        copy = Signer(SECRET.encode()).session(key_id=key_id, expires=now + 600, session_id=live)
        assert_ended(await client.get(service.url("/v1/runs"), headers=cookie(copy)))
    finally:
        await ended.close()
        keys.close()


async def test_a_stale_cookie_beside_the_session_does_not_end_it(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    """A browser behind a proxy's prefix may send two cookies of one name: the prefix's own
    first, then one an older release left at `/` (here, one already signed out). The session
    that grants is used, whichever comes first; signing out ends each of them."""
    base = base_of(keyed)
    stale = await sign_in(client, base, keyed.alice)
    assert (await sign_out(client, base, stale)).status_code == 204
    fresh = await sign_in(client, base, keyed.bob)
    for pair in (f"{fresh}; {SESSION_COOKIE}={stale}", f"{stale}; {SESSION_COOKIE}={fresh}"):
        who = await client.get(keyed.url("/v1/session"), headers=cookie(pair))
        assert who.status_code == 200, who.text
        assert who.json()["name"] == "bob"
        listed = await client.get(keyed.url("/v1/runs"), headers=cookie(pair))
        assert listed.status_code == 200, listed.text
    # Two live sessions in one request: signing out ends both.
    other = await sign_in(client, base, keyed.alice)
    assert (await sign_out(client, base, f"{fresh}; {SESSION_COOKIE}={other}")).status_code == 204
    assert_ended(await client.get(keyed.url("/v1/runs"), headers=cookie(fresh)))
    assert_ended(await client.get(keyed.url("/v1/runs"), headers=cookie(other)))


async def test_a_run_being_created_as_its_session_signs_out_is_answered(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    """Only what lasts is cut (streams, downloads): a `POST /v1/runs` cut once its run was
    stored left the run made, holding its slots, and its creator with a dropped connection."""
    base = keyed.url("").rstrip("/")
    value = await sign_in(client, base, keyed.alice)
    body = b'{"question": "Made as I left?"}'
    port = keyed.service.server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = (
            f"POST /v1/runs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Cookie: {SESSION_COOKIE}={value}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode())  # allowed: the handler now waits for the body
        await writer.drain()
        signed_out = await client.delete(f"{base}/v1/session", headers=cookie(value))
        assert signed_out.status_code == 204
        writer.write(body)
        await writer.drain()
        async with asyncio.timeout(CUT_WITHIN_S):
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    # A new request with the cookie is refused, as ever.
    assert_unauthorized(await client.get(f"{base}/v1/runs", headers=cookie(value)), REALM)
