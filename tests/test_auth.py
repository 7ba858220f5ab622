"""Access control over real HTTP: keys, run ownership, stream tokens, sessions and revocation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from research_service.auth.key_store import SqliteKeys
from research_service.auth.tokens import Signer
from research_service.runs.sqlite_db import RUN_STORE_FILE
from tests.conftest import MakeService, Service
from tests.sse import listen

UNKNOWN_ID = "0123456789abcdef"
SECRET = "s3cret-for-the-tests-" + "x" * 24
REALM = 'Bearer realm="research-service"'
INVALID_TOKEN = REALM + ', error="invalid_token"'
PROBLEMS = "https://research-service.dev/problems/"
SESSION_COOKIE = "research_session"
#: A revoked key's open requests are checked every 2 s (Keyring.RECHECK_S): well within this.
CUT_WITHIN_S = 10.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


def token_of(events_url: str) -> str:
    (token,) = parse_qs(urlsplit(events_url).query)["token"]
    return token


def assert_problem(response: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == PROBLEMS + slug
    assert body["status"] == status
    return body


def assert_unauthorized(response: httpx.Response, challenge: str = INVALID_TOKEN) -> str:
    """A 401 problem with the Bearer challenge; its detail."""
    body = assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == challenge
    detail: str = body["detail"]
    return detail


@dataclass
class Keyed:
    """A service with --auth keys and a SQLite run store, and the keys made in that store."""

    service: Service
    keys: SqliteKeys
    alice: str
    bob: str
    root: str  # an admin key

    def url(self, path: str) -> str:
        return self.service.url(path)

    async def create(
        self, client: httpx.AsyncClient, key: str, question: str = "What is up?"
    ) -> dict[str, Any]:
        response = await client.post(
            self.url("/v1/runs"), json={"question": question}, headers=bearer(key)
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def status(self, client: httpx.AsyncClient, run_id: str) -> str:
        response = await client.get(self.url(f"/v1/runs/{run_id}"), headers=bearer(self.root))
        assert response.status_code == 200, response.text
        status: str = response.json()["status"]
        return status

    async def listed(self, client: httpx.AsyncClient, key: str) -> list[str]:
        response = await client.get(self.url("/v1/runs"), headers=bearer(key))
        assert response.status_code == 200, response.text
        return [run["id"] for run in response.json()["runs"]]


def make_keys(store: Path) -> tuple[SqliteKeys, str, str, str]:
    keys = SqliteKeys(store)
    _, alice = keys.create("alice", admin=False)
    _, bob = keys.create("bob", admin=False)
    _, root = keys.create("root", admin=True)
    return keys, alice, bob, root


@pytest.fixture
async def keyed(tmp_path: Path, make_service: MakeService) -> AsyncIterator[Keyed]:
    keys, alice, bob, root = make_keys(tmp_path / "data" / RUN_STORE_FILE)
    try:
        service = await make_service(store="sqlite", auth="keys", secret=SECRET)
        yield Keyed(service, keys, alice, bob, root)
    finally:
        keys.close()


async def poll(probe: Callable[[], Awaitable[bool]], *, within: float) -> None:
    """Ask `probe` until it says yes, for at most `within` seconds."""
    async with asyncio.timeout(within):
        while not await probe():  # noqa: ASYNC110 - an HTTP answer or a log line has no event
            await asyncio.sleep(0.02)


def held(keyed: Keyed) -> None:
    """Runs started from now on pause mid-answer until `keyed.service.llm.release` is set."""
    keyed.service.llm.hold_after = 1


# ---------------------------------------------------------------- ownership


async def test_another_keys_run_is_not_found_exactly_like_an_unknown_run_everywhere(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    held(keyed)
    run_id = (await keyed.create(client, keyed.alice))["id"]
    await keyed.service.until_held()

    varying = {"date": "", "x-request-id": ""}

    async def as_bob(method: str, path: str) -> httpx.Response:
        return await client.request(method, keyed.url(path), headers=bearer(keyed.bob))

    for method, path in [
        ("GET", "/v1/runs/{}"),
        ("GET", "/v1/runs/{}/events"),
        ("POST", "/v1/runs/{}/cancel"),
        ("GET", "/v1/runs/{}/recording"),
    ]:
        theirs = await as_bob(method, path.format(run_id))
        unknown = await as_bob(method, path.format(UNKNOWN_ID))
        assert_problem(theirs, 404, "not-found")
        assert_problem(unknown, 404, "not-found")
        assert theirs.content == unknown.content.replace(UNKNOWN_ID.encode(), run_id.encode())
        # The date and the request id (one per request) differ by design.
        assert dict(theirs.headers) | varying == dict(unknown.headers) | varying

    # Bob's cancel did nothing: the run goes on and completes.
    assert await keyed.status(client, run_id) == "running"
    keyed.service.llm.release.set()
    await keyed.service.wait_done(run_id)
    assert await keyed.status(client, run_id) == "completed"
    # Finished, its recording is alice's to download, still not bob's.
    mine = await client.get(keyed.url(f"/v1/runs/{run_id}/recording"), headers=bearer(keyed.alice))
    assert mine.status_code == 200
    assert run_id in mine.text
    theirs = await as_bob("GET", f"/v1/runs/{run_id}/recording")
    unknown = await as_bob("GET", f"/v1/runs/{UNKNOWN_ID}/recording")
    assert theirs.content == unknown.content.replace(UNKNOWN_ID.encode(), run_id.encode())


async def test_listings_show_each_key_its_own_runs_on_every_page_and_admins_all(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    alices = [(await keyed.create(client, keyed.alice, f"Alice {n}?"))["id"] for n in range(3)]
    bobs = [(await keyed.create(client, keyed.bob, f"Bob {n}?"))["id"] for n in range(2)]

    async def pages(key: str) -> list[str]:
        seen: list[str] = []
        params = {"limit": "1"}
        while True:
            response = await client.get(keyed.url("/v1/runs"), params=params, headers=bearer(key))
            assert response.status_code == 200, response.text
            body = response.json()
            seen += [run["id"] for run in body["runs"]]
            if body["next"] is None:
                return seen
            params = {"limit": "1", "before": body["next"]}

    assert await pages(keyed.alice) == alices[::-1]
    assert await pages(keyed.bob) == bobs[::-1]
    assert await keyed.listed(client, keyed.alice) == alices[::-1]
    assert set(await keyed.listed(client, keyed.root)) == set(alices + bobs)
    assert set(await pages(keyed.root)) == set(alices + bobs)


async def test_resuming_another_keys_run_one_shot_is_refused_like_an_unknown_run(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    question = "Whose run is this?"
    run_id = (await keyed.create(client, keyed.alice, question))["id"]
    await keyed.service.wait_done(run_id)

    async def resume(key: str, last_event_id: str) -> httpx.Response:
        return await client.get(
            keyed.url("/v1/research"),
            params={"q": question},
            headers={**bearer(key), "Last-Event-ID": last_event_id},
        )

    theirs = await resume(keyed.bob, f"{run_id}:1")
    unknown = await resume(keyed.bob, f"{UNKNOWN_ID}:1")
    assert_problem(theirs, 400, "invalid-event-id")
    assert theirs.content == unknown.content.replace(UNKNOWN_ID.encode(), run_id.encode())
    by_param = await client.get(
        keyed.url("/v1/research"),
        params={"q": question, "last_event_id": f"{run_id}:1"},
        headers=bearer(keyed.bob),
    )
    assert by_param.content == theirs.content
    # Nothing was started for bob either.
    assert await keyed.listed(client, keyed.bob) == []

    # The owner resumes it: the rest of the run, to its done.
    client.headers.update(bearer(keyed.alice))
    one_shot = keyed.url("/v1/research?" + urlencode({"q": question}))
    rest = await listen(client, one_shot, last_event_id=f"{run_id}:1")
    assert rest.status == 200
    assert rest.events[0].id == f"{run_id}:2"
    assert rest.names[-1] == "done"


async def test_an_admin_key_sees_and_cancels_another_keys_run(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    held(keyed)
    run_id = (await keyed.create(client, keyed.alice))["id"]
    await keyed.service.until_held()
    snapshot = await client.get(keyed.url(f"/v1/runs/{run_id}"), headers=bearer(keyed.root))
    assert snapshot.status_code == 200
    assert snapshot.json()["id"] == run_id

    cancel = await client.post(keyed.url(f"/v1/runs/{run_id}/cancel"), headers=bearer(keyed.root))
    assert cancel.status_code == 202, cancel.text
    assert cancel.json()["cancelling"] is True
    await keyed.service.wait_done(run_id)
    assert await keyed.status(client, run_id) == "cancelled"
    alices = await client.get(keyed.url(f"/v1/runs/{run_id}"), headers=bearer(keyed.alice))
    assert alices.json()["status"] == "cancelled"


async def test_runs_made_with_auth_off_are_seen_only_by_admins_once_auth_is_on(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    open_service = await make_service(store="sqlite", auth="off")
    run_id = await open_service.create(client, "From before the keys?")
    await open_service.wait_done(run_id)
    await open_service.server.close()

    keys, alice, _, root = make_keys(tmp_path / "data" / RUN_STORE_FILE)
    try:
        service = await make_service(store="sqlite", auth="keys")
        keyed = Keyed(service, keys, alice, "", root)
        assert await keyed.listed(client, alice) == []
        assert await keyed.listed(client, root) == [run_id]
        theirs = await client.get(service.url(f"/v1/runs/{run_id}"), headers=bearer(alice))
        assert_problem(theirs, 404, "not-found")
        assert await keyed.status(client, run_id) == "completed"
        recording = await client.get(
            service.url(f"/v1/runs/{run_id}/recording"), headers=bearer(root)
        )
        assert recording.status_code == 200
    finally:
        keys.close()


# ---------------------------------------------------------------- 401s and open routes

REFUSALS = [
    pytest.param({}, REALM, id="no-credentials"),
    pytest.param({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, None, id="basic-scheme"),
    pytest.param({"Authorization": "Bearer"}, None, id="bearer-without-key"),
    pytest.param(bearer("rsk_0123456789ab_" + "A" * 43), INVALID_TOKEN, id="unknown-key"),
    pytest.param(bearer("not-a-key-at-all"), INVALID_TOKEN, id="unknown-string"),
]


@pytest.mark.parametrize(("headers", "challenge"), REFUSALS)
async def test_requests_without_a_usable_key_are_401_with_a_bearer_challenge(
    keyed: Keyed, client: httpx.AsyncClient, headers: dict[str, str], challenge: str | None
) -> None:
    run_id = (await keyed.create(client, keyed.alice))["id"]
    requests = [
        ("GET", "/v1/runs"),
        ("POST", "/v1/runs"),
        ("GET", f"/v1/runs/{run_id}"),
        ("GET", f"/v1/runs/{run_id}/events"),
        ("POST", f"/v1/runs/{run_id}/cancel"),
        ("GET", f"/v1/runs/{run_id}/recording"),
        ("GET", "/v1/research?q=Anything"),
        ("GET", "/v1/session"),
    ]
    for method, path in requests:
        body = {"question": "Sneaky?"} if path == "/v1/runs" and method == "POST" else None
        response = await client.request(method, keyed.url(path), json=body, headers=headers)
        expected = challenge or REALM + ', error="invalid_request"'
        assert_unauthorized(response, expected)
    assert await keyed.listed(client, keyed.root) == [run_id]


async def test_a_revoked_key_is_refused_at_once_for_a_new_request(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    assert await keyed.listed(client, keyed.alice) == []
    assert keyed.keys.revoke("alice")
    response = await client.get(keyed.url("/v1/runs"), headers=bearer(keyed.alice))
    assert_unauthorized(response)
    refused = await client.post(
        keyed.url("/v1/runs"), json={"question": "Still?"}, headers=bearer(keyed.alice)
    )
    assert_unauthorized(refused)
    assert await keyed.listed(client, keyed.root) == []
    # Bob's key is untouched.
    assert await keyed.listed(client, keyed.bob) == []


async def test_health_checks_and_the_panel_need_no_key(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    for path in ("/healthz", "/readyz", "/", "/static/panel.js"):
        response = await client.get(keyed.url(path))
        assert response.status_code == 200, (path, response.text)


async def test_last_used_is_recorded_when_a_key_is_used(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    def last_used(name: str) -> float | None:
        (entry,) = [k for k in keyed.keys.listing() if k.name == name]
        return entry.last_used_at

    assert last_used("alice") is None
    before = time.time()
    await keyed.listed(client, keyed.alice)
    used = last_used("alice")
    assert used is not None
    assert before <= used <= time.time()
    assert last_used("bob") is None


async def test_keys_from_a_keys_file_work_and_an_edited_file_revokes_them(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    alice, root = "alice-file-secret-" + "a" * 32, "root-file-secret-" + "r" * 32
    path = tmp_path / "keys.txt"
    path.write_text(f"# the team\nalice:{alice}\n\nroot:{root}:admin\n")
    service = await make_service(auth="keys", api_keys_file=path)
    created = await client.post(
        service.url("/v1/runs"), json={"question": "From a file?"}, headers=bearer(alice)
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    mine = await client.get(service.url("/v1/runs"), headers=bearer(alice))
    assert [run["id"] for run in mine.json()["runs"]] == [run_id]
    session = await client.get(service.url("/v1/session"), headers=bearer(root))
    assert session.json() == {"auth": "keys", "name": "root", "admin": True}

    path.write_text(f"root:{root}:admin\n")

    async def refused() -> bool:
        response = await client.get(service.url("/v1/runs"), headers=bearer(alice))
        return response.status_code == 401

    # The file is read again within Keyring.RECHECK_S (2 s) of the edit.
    await poll(refused, within=CUT_WITHIN_S)
    assert_unauthorized(await client.get(service.url("/v1/runs"), headers=bearer(alice)))
    assert (await client.get(service.url("/v1/runs"), headers=bearer(root))).status_code == 200


async def test_spaces_around_a_keys_file_lines_fields_are_not_part_of_the_secret(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    """`frank: SECRET` and `root : SECRET : admin` as written by hand: the keys work."""
    frank, root = "f" * 40, "r" * 40
    path = tmp_path / "keys.txt"
    path.write_text(f"frank: {frank}\nroot : {root} :admin\n")
    service = await make_service(auth="keys", api_keys_file=path)
    for key, expected in ((frank, ("frank", False)), (root, ("root", True))):
        who = await client.get(service.url("/v1/session"), headers=bearer(key))
        assert who.status_code == 200, who.text
        assert (who.json()["name"], who.json()["admin"]) == expected


async def test_a_keys_file_key_in_the_shape_of_a_store_key_works_beside_the_store(
    keyed: Keyed, tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    """A key made by `keys create` elsewhere may be listed in a keys file, store or not."""
    await keyed.service.server.close()
    carol = "rsk_0123456789ab_" + "C" * 43
    path = tmp_path / "keys.txt"
    path.write_text(f"carol:{carol}\n")
    service = await make_service(store="sqlite", auth="keys", api_keys_file=path)
    who = await client.get(service.url("/v1/session"), headers=bearer(carol))
    assert who.json() == {"auth": "keys", "name": "carol", "admin": False}
    # The store's keys still work beside it.
    mine = await client.get(service.url("/v1/session"), headers=bearer(keyed.alice))
    assert mine.json() == {"auth": "keys", "name": "alice", "admin": False}


async def test_a_new_secret_on_a_keys_file_line_ends_the_old_ones_sessions(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    """A file key's id follows its secret: sessions and tokens made with the old one end."""
    old, new = "alice-old-secret-" + "o" * 32, "alice-new-secret-" + "n" * 32
    path = tmp_path / "keys.txt"
    path.write_text(f"alice:{old}\n")
    service = await make_service(auth="keys", api_keys_file=path)
    signed_in = await client.post(service.url("/v1/session"), json={"api_key": old})
    session = signed_in.cookies[SESSION_COOKIE]
    created = await client.post(
        service.url("/v1/runs"), json={"question": "Rotated?"}, headers=bearer(old)
    )
    events_url = created.json()["events_url"]
    client.cookies.clear()

    path.write_text(f"alice:{new}\n")

    async def ended() -> bool:
        response = await client.get(service.url("/v1/session"), headers=cookie(session))
        return response.status_code == 401

    await poll(ended, within=CUT_WITHIN_S)
    assert_unauthorized(await client.get(service.url(events_url)))
    who = await client.get(service.url("/v1/session"), headers=bearer(new))
    assert who.json() == {"auth": "keys", "name": "alice", "admin": False}
    # The name is the owner: the new secret still sees the run made with the old one.
    mine = await client.get(service.url("/v1/runs"), headers=bearer(new))
    assert [run["id"] for run in mine.json()["runs"]] == [created.json()["id"]]


# ---------------------------------------------------------------- stream tokens


async def test_a_snapshot_gives_a_fresh_token_to_a_key_and_the_same_one_to_a_token(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    created = await keyed.create(client, keyed.alice)
    run_id = created["id"]
    token = token_of(created["events_url"])
    by_token = await client.get(keyed.url(f"/v1/runs/{run_id}"), params={"token": token})
    assert by_token.json()["events_url"] == created["events_url"]
    by_key = await client.get(keyed.url(f"/v1/runs/{run_id}"), headers=bearer(keyed.alice))
    fresh = by_key.json()["events_url"]
    assert fresh.startswith(f"/v1/runs/{run_id}/events?token=")
    received = await listen(client, keyed.url(fresh))
    assert received.names[-1] == "done"


async def test_the_events_url_opens_its_runs_stream_and_snapshot_without_a_header(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    created = await keyed.create(client, keyed.alice)
    events_url = created["events_url"]
    assert events_url.startswith(f"/v1/runs/{created['id']}/events?token=")
    received = await listen(client, keyed.url(events_url))
    assert received.status == 200
    assert received.names[-1] == "done"
    assert received.last[1]["status"] == "completed"
    token = token_of(events_url)
    snapshot = await client.get(keyed.url(f"/v1/runs/{created['id']}"), params={"token": token})
    assert snapshot.status_code == 200
    assert snapshot.json()["status"] == "completed"


async def test_a_stream_token_expires_after_the_configured_time(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    keys, alice, _, _ = make_keys(tmp_path / "data" / RUN_STORE_FILE)
    try:
        service = await make_service(
            store="sqlite", auth="keys", secret=SECRET, stream_token_ttl_s=1
        )
        response = await client.post(
            service.url("/v1/runs"), json={"question": "Soon gone?"}, headers=bearer(alice)
        )
        run_id, token = response.json()["id"], token_of(response.json()["events_url"])
        expires = int(token.split(".")[2])
        assert time.time() - 1 <= expires <= time.time() + 1
        url = service.url(f"/v1/runs/{run_id}")
        assert (await client.get(url, params={"token": token})).status_code == 200

        async def refused() -> bool:
            return (await client.get(url, params={"token": token})).status_code != 200

        await poll(refused, within=10)
        assert time.time() >= expires
        assert "expired" in assert_unauthorized(await client.get(url, params={"token": token}))
        events = await client.get(f"{url}/events", params={"token": token})
        assert_unauthorized(events)
    finally:
        keys.close()


async def test_a_crafted_expired_token_with_the_real_secret_is_refused(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    created = await keyed.create(client, keyed.alice)
    key_id = token_of(created["events_url"]).split(".")[1]
    signer = Signer(SECRET.encode())
    stale = signer.stream_token(run_id=created["id"], key_id=key_id, expires=int(time.time()) - 1)
    fresh = signer.stream_token(run_id=created["id"], key_id=key_id, expires=int(time.time()) + 600)
    url = keyed.url(f"/v1/runs/{created['id']}")
    assert "expired" in assert_unauthorized(await client.get(url, params={"token": stale}))
    # The same token with a future time passes: the secret is the service's.
    assert (await client.get(url, params={"token": fresh})).status_code == 200


async def test_a_stream_token_opens_its_own_run_only(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    first = await keyed.create(client, keyed.alice, "First?")
    second = await keyed.create(client, keyed.alice, "Second?")
    bobs = await keyed.create(client, keyed.bob, "Bob's?")
    token = token_of(first["events_url"])
    for other in (second["id"], bobs["id"], UNKNOWN_ID):
        for path in (f"/v1/runs/{other}", f"/v1/runs/{other}/events"):
            response = await client.get(keyed.url(path), params={"token": token})
            assert "another run" in assert_unauthorized(response)


def tampered(token: str) -> list[str]:
    run_id, key_id, expires, signature = token.split(".")
    flipped = "A" if signature[-1] != "A" else "B"
    return [
        f"{run_id}.{key_id}.{expires}.{signature[:-1]}{flipped}",
        f"{run_id}.{key_id}.{int(expires) + 86400}.{signature}",
        f"{run_id}.{'0' * len(key_id)}.{expires}.{signature}",
        f"{run_id}.{key_id}.{expires}",
        token + "x",
        "",
    ]


async def test_a_tampered_stream_token_is_refused(keyed: Keyed, client: httpx.AsyncClient) -> None:
    created = await keyed.create(client, keyed.alice)
    for bad in tampered(token_of(created["events_url"])):
        for path in (f"/v1/runs/{created['id']}", f"/v1/runs/{created['id']}/events"):
            response = await client.get(keyed.url(path), params={"token": bad})
            # Even an empty token was sent, so it is an invalid one.
            assert_unauthorized(response)


async def test_a_stream_token_cannot_create_list_cancel_or_download(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    held(keyed)
    created = await keyed.create(client, keyed.alice)
    run_id, token = created["id"], token_of(created["events_url"])
    await keyed.service.until_held()
    attempts = [
        ("POST", "/v1/runs", {"question": "With a token?"}),
        ("GET", "/v1/runs", None),
        ("POST", f"/v1/runs/{run_id}/cancel", None),
        ("GET", f"/v1/runs/{run_id}/recording", None),
        ("GET", "/v1/research?q=With+a+token", None),
        # Signing in and out authenticate for themselves; a token is still no key there.
        ("GET", "/v1/session", None),
        ("POST", "/v1/session", {"api_key": keyed.alice}),
        ("DELETE", "/v1/session", None),
    ]
    for method, path, body in attempts:
        for headers in ({}, bearer(keyed.alice)):
            response = await client.request(
                method, keyed.url(path), params={"token": token}, json=body, headers=headers
            )
            detail = assert_problem(response, 403, "token-not-allowed")["detail"]
            assert token not in detail
    assert await keyed.listed(client, keyed.root) == [run_id]
    assert await keyed.status(client, run_id) == "running"
    keyed.service.llm.release.set()
    await keyed.service.wait_done(run_id)
    assert await keyed.status(client, run_id) == "completed"


async def test_a_stream_token_survives_a_restart_and_its_secret_file_is_private(
    tmp_path: Path, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    keys, alice, _, _ = make_keys(tmp_path / "data" / RUN_STORE_FILE)
    try:
        first = await make_service(store="sqlite", auth="keys")
        response = await client.post(
            first.url("/v1/runs"), json={"question": "Still there?"}, headers=bearer(alice)
        )
        run_id, events_url = response.json()["id"], response.json()["events_url"]
        await first.wait_done(run_id)
        await first.server.close()
        secret_file = tmp_path / "data" / "secret.key"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        written = secret_file.read_bytes()

        second = await make_service(store="sqlite", auth="keys")
        snapshot = await client.get(second.url(events_url.replace("/events", "")))
        assert snapshot.status_code == 200, snapshot.text
        assert snapshot.json()["status"] == "completed"
        received = await listen(client, second.url(events_url))
        assert received.status == 200
        assert received.names[-1] == "done"
        assert secret_file.read_bytes() == written
    finally:
        keys.close()


async def test_a_stream_token_of_a_revoked_key_stops_working(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    created = await keyed.create(client, keyed.alice)
    url = keyed.url(f"/v1/runs/{created['id']}")
    token = token_of(created["events_url"])
    assert (await client.get(url, params={"token": token})).status_code == 200
    assert keyed.keys.revoke("alice")
    assert "revoked" in assert_unauthorized(await client.get(url, params={"token": token}))
    assert_unauthorized(await client.get(f"{url}/events", params={"token": token}))


async def test_the_access_log_and_error_details_never_show_a_stream_token(
    keyed: Keyed, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    created = await keyed.create(client, keyed.alice)
    run_id, token = created["id"], token_of(created["events_url"])
    await keyed.service.wait_done(run_id)
    refused: list[httpx.Response] = []
    assert (await client.get(keyed.url(created["events_url"]))).status_code == 200
    assert (await client.get(keyed.url(f"/v1/runs/{run_id}"), params={"token": token})).is_success
    for bad in tampered(token)[:3]:
        refused.append(await client.get(keyed.url(f"/v1/runs/{run_id}"), params={"token": bad}))
    refused.append(await client.get(keyed.url("/v1/runs"), params={"token": token}))
    refused.append(
        await client.get(keyed.url(f"/v1/runs/{UNKNOWN_ID}/events"), params={"token": token})
    )
    for response in refused:
        assert response.status_code in (401, 403)
        assert token not in response.text
        assert token.split(".")[-1] not in response.text

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]

    # Each line is written once its response is sent: wait for all of them.
    async def all_logged() -> bool:
        return sum("token=" in line for line in lines()) >= 2 + len(refused)

    await poll(all_logged, within=5)
    for line in lines():
        assert token.split(".")[-1] not in line
        assert run_id + "." not in line
    assert sum("token=REDACTED" in line for line in lines()) >= 2 + len(refused)


# ---------------------------------------------------------------- sessions


def set_cookie(response: httpx.Response) -> tuple[str, set[str]]:
    """The session cookie's value and its attributes (lower-cased names) from Set-Cookie."""
    (header,) = response.headers.get_list("Set-Cookie")
    first, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = first.partition("=")
    assert name == SESSION_COOKIE
    return value, {a.lower() for a in attributes}


async def test_signing_in_gives_a_strict_http_only_cookie_secure_only_over_https(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    response = await client.post(keyed.url("/v1/session"), json={"api_key": keyed.alice})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body.pop("expires_at").endswith("Z")
    assert body == {"auth": "keys", "name": "alice", "admin": False}
    value, attributes = set_cookie(response)
    assert value
    assert {"httponly", "samesite=strict", "path=/", "max-age=86400"} <= attributes
    assert "secure" not in attributes

    proxied = await client.post(
        keyed.url("/v1/session"),
        json={"api_key": keyed.alice},
        headers={"X-Forwarded-Proto": "https"},
    )
    _, attributes = set_cookie(proxied)
    assert {"httponly", "samesite=strict", "path=/", "secure"} <= attributes


async def test_the_session_cookie_alone_lists_and_creates_and_signing_out_clears_it(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    signed_in = await client.post(keyed.url("/v1/session"), json={"api_key": keyed.alice})
    value, _ = set_cookie(signed_in)
    created = await client.post(
        keyed.url("/v1/runs"), json={"question": "By cookie?"}, headers=cookie(value)
    )
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    listed = await client.get(keyed.url("/v1/runs"), headers=cookie(value))
    assert [run["id"] for run in listed.json()["runs"]] == [run_id]
    assert await keyed.listed(client, keyed.alice) == [run_id]
    who = await client.get(keyed.url("/v1/session"), headers=cookie(value))
    assert who.json() == {"auth": "keys", "name": "alice", "admin": False}
    async with httpx.AsyncClient(headers=cookie(value)) as browser:
        received = await listen(browser, keyed.url(f"/v1/runs/{run_id}/events"))
    assert received.names[-1] == "done"

    signed_out = await client.delete(keyed.url("/v1/session"), headers=cookie(value))
    assert signed_out.status_code == 204
    cleared, attributes = set_cookie(signed_out)
    assert cleared in ("", '""')
    assert "max-age=0" in attributes
    assert "path=/" in attributes


async def test_a_session_of_a_revoked_key_is_refused(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    signed_in = await client.post(keyed.url("/v1/session"), json={"api_key": keyed.alice})
    value, _ = set_cookie(signed_in)
    assert (await client.get(keyed.url("/v1/runs"), headers=cookie(value))).status_code == 200
    assert keyed.keys.revoke("alice")
    assert "revoked" in assert_unauthorized(
        await client.get(keyed.url("/v1/runs"), headers=cookie(value)), REALM
    )
    assert_unauthorized(await client.get(keyed.url("/v1/session"), headers=cookie(value)), REALM)
    again = await client.post(keyed.url("/v1/session"), json={"api_key": keyed.alice})
    assert_unauthorized(again)
    assert "set-cookie" not in again.headers


async def test_forged_expired_or_misused_session_cookies_are_refused(
    keyed: Keyed, client: httpx.AsyncClient
) -> None:
    signed_in = await client.post(keyed.url("/v1/session"), json={"api_key": keyed.alice})
    value, _ = set_cookie(signed_in)
    key_id, session_id, expires, signature = value.split(".")
    signer = Signer(SECRET.encode())
    created = await keyed.create(client, keyed.alice)
    forged = [
        "nonsense",
        f"{key_id}.{session_id}.{int(expires) + 1}.{signature}",
        f"{key_id}.{session_id[::-1]}.{expires}.{signature}",
        f"{key_id}.{session_id}.{expires}.{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}",
        signer.session(key_id=key_id, expires=int(time.time()) - 1),
        Signer(b"another-secret-" + b"y" * 32).session(key_id=key_id, expires=int(expires)),
        # A stream token is signed for another purpose: it is no session.
        token_of(created["events_url"]),
    ]
    for bad in forged:
        for path in ("/v1/runs", "/v1/session"):
            response = await client.get(keyed.url(path), headers=cookie(bad))
            assert_unauthorized(response, REALM)
    # ...and a session is no stream token.
    snapshot = await client.get(keyed.url(f"/v1/runs/{created['id']}"), params={"token": value})
    assert_unauthorized(snapshot)
    # The real one, for contrast.
    assert (await client.get(keyed.url("/v1/runs"), headers=cookie(value))).status_code == 200


async def test_the_session_endpoint_with_auth_on_and_off(
    keyed: Keyed, make_service: MakeService, client: httpx.AsyncClient
) -> None:
    assert_unauthorized(await client.get(keyed.url("/v1/session")), REALM)
    as_root = await client.get(keyed.url("/v1/session"), headers=bearer(keyed.root))
    assert as_root.json() == {"auth": "keys", "name": "root", "admin": True}
    wrong = await client.post(keyed.url("/v1/session"), json={"api_key": "rsk_nope"})
    assert_unauthorized(wrong)
    assert "set-cookie" not in wrong.headers

    open_service = await make_service(auth="off")
    who = await client.get(open_service.url("/v1/session"))
    assert who.status_code == 200
    assert who.json() == {"auth": "off"}
    signed_in = await client.post(open_service.url("/v1/session"), json={"api_key": "anything"})
    assert signed_in.json() == {"auth": "off"}
    assert "set-cookie" not in signed_in.headers


# ---------------------------------------------------------------- revocation cuts streams


@contextlib.asynccontextmanager
async def following(url: str, headers: dict[str, str]) -> AsyncIterator[httpx.Response]:
    """An open event stream (its reads wait as long as it takes)."""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http,
        http.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200
        yield response


async def read_until(chunks: AsyncIterator[bytes], marker: bytes) -> bytes:
    """What the stream sends up to and including `marker`."""
    received = b""
    async for chunk in chunks:
        received += chunk
        if marker in received:
            return received
    raise AssertionError(f"the stream ended before {marker!r}: {received!r}")


async def read_to_end(chunks: AsyncIterator[bytes]) -> bytes:
    """Everything the server still sends, until it closes or cuts the connection."""
    received = b""
    with contextlib.suppress(httpx.RemoteProtocolError, httpx.ReadError):
        async for chunk in chunks:
            received += chunk
    return received


@pytest.mark.parametrize("via", ["key", "token", "session"])
async def test_revoking_a_key_cuts_its_open_stream_and_refuses_a_reconnect(
    keyed: Keyed, client: httpx.AsyncClient, via: str
) -> None:
    held(keyed)
    created = await keyed.create(client, keyed.alice)
    bobs = await keyed.create(client, keyed.bob)
    await keyed.service.until_held()
    url = keyed.url(f"/v1/runs/{created['id']}/events")
    headers = bearer(keyed.alice)
    if via == "token":
        url, headers = keyed.url(created["events_url"]), {}
    elif via == "session":
        signed_in = await client.post(keyed.url("/v1/session"), json={"api_key": keyed.alice})
        headers = cookie(set_cookie(signed_in)[0])

    bob_url = keyed.url(f"/v1/runs/{bobs['id']}/events")
    async with (
        following(url, headers) as alices,
        following(bob_url, bearer(keyed.bob)) as bobs_stream,
    ):
        alice_chunks = alices.aiter_raw()
        await read_until(alice_chunks, b"event: phase")
        assert keyed.keys.revoke("alice")
        async with asyncio.timeout(CUT_WITHIN_S):
            rest = await read_to_end(alice_chunks)
        assert b"event: done" not in rest
        # Bob's stream, on a key still usable, was left alone and reads on to the end.
        keyed.service.llm.release.set()
        async with asyncio.timeout(CUT_WITHIN_S):
            bob_rest = await read_to_end(bobs_stream.aiter_raw())
        assert b"event: done" in bob_rest

    assert_unauthorized(
        await client.get(url, headers=headers), INVALID_TOKEN if via != "session" else REALM
    )
