"""Completion webhooks: a real receiver on loopback verifies them with `standardwebhooks`.

The service POSTs when a run ends, signed per Standard Webhooks; the receiver here answers
500 when told to, so retries, the day-long backoff's persistence and a restart mid-retry are
seen from the receiving end.
"""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from research_service.auth.key_store import SqliteKeys
from research_service.errors import ConfigError
from research_service.runs.sqlite_db import RUN_STORE_FILE
from research_service.settings import Settings
from research_service.webhooks.dispatcher import MAX_IN_FLIGHT, MAX_WAIT_S, backoff
from tests import cli_process
from tests.conftest import MakeService, Service
from tests.metrics_text import metric_samples
from tests.served import start, stop
from tests.test_lifecycle import (
    REQUESTS_THAT_CREATE_A_RUN,
    served_connections,
    store_writes_held,
    stored_run_id,
    wait_until,
)
from tests.webhook_receiver import Receiver

SECRET = "webhook-tests-signing-secret-0123456789abcdef"
CONFIGURED = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with Receiver() as server:
        yield server


async def hooked(make_service: MakeService, **overrides: Any) -> Service:
    """A service that may send webhooks to loopback, retrying fast."""
    settings: dict[str, Any] = {
        "store": "sqlite",
        "fetch_allow": "127.0.0.1",
        "webhook_retry_s": 0.05,
        "secret": SECRET,
    }
    return await make_service(**{**settings, **overrides})


async def create(
    client: httpx.AsyncClient, service: Service, url: str | None, **headers: str
) -> httpx.Response:
    options: dict[str, Any] = {} if url is None else {"webhook": {"url": url}}
    return await client.post(
        service.url("/v1/runs"), json={"question": "Why hook?", "options": options}, headers=headers
    )


async def server_secret(data_dir: Path, signing_secret: str) -> str:
    """The server-wide secret as an operator gets it: `research-service webhook-secret`."""
    shown = await cli_process.run(
        "webhook-secret", "--data-dir", str(data_dir), RESEARCH_SECRET=signing_secret
    )
    assert shown.returncode == 0, shown.stderr
    return shown.stdout.strip()


async def deliveries(client: httpx.AsyncClient, service: Service, run_id: str) -> list[Any]:
    snapshot = await client.get(service.url(f"/v1/runs/{run_id}"))
    assert snapshot.status_code == 200
    found: list[Any] = snapshot.json().get("webhooks", [])
    return found


async def settled(
    client: httpx.AsyncClient, service: Service, run_id: str, timeout: float = 10
) -> list[Any]:
    """The run's deliveries once none is pending (the outbox has no event to wait on)."""
    async with asyncio.timeout(timeout):
        while True:
            found = await deliveries(client, service, run_id)
            if found and all(d["state"] != "pending" for d in found):
                return found
            await asyncio.sleep(0.02)


LinkCase = tuple[str | None, dict[str, str], str]


@pytest.mark.parametrize(
    "case",
    [
        # Behind the documented prefix proxy on a port of its own: what nginx forwards.
        (
            None,
            {"X-Forwarded-Host": "localhost:8443", "X-Forwarded-Prefix": "/research",
             "X-Forwarded-Proto": "https"},
            "https://localhost:8443/research",
        ),
        # A forwarded host the service does not serve, and a prefix that is no plain path,
        # are not believed: the Host header is.
        (
            None,
            {"X-Forwarded-Host": "attacker.invalid:8080", "X-Forwarded-Prefix": "//x?y"},
            "HOST",
        ),
        (None, {"X-Forwarded-Prefix": "/../other-app/steal"}, "HOST"),  # no climbing out
        # The operator's own address wins over whatever a request says.
        (
            "https://research.example.com/research/",
            {"X-Forwarded-Host": "localhost:9999"},
            "https://research.example.com/research",
        ),
    ],
    ids=["prefix-proxy", "untrusted", "dot-dot", "public-url"],
)  # fmt: skip
async def test_webhook_links_use_the_public_address(
    make_service: MakeService, client: httpx.AsyncClient, receiver: Receiver, case: LinkCase
) -> None:
    public_url, headers, base = case
    service = await hooked(make_service, public_url=public_url)
    created = await create(client, service, receiver.url(), **headers)
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    (got,) = await receiver.wait_for(1)
    links = json.loads(got.body)["data"]["links"]
    expected = service.url("").rstrip("/") if base == "HOST" else base
    assert links["snapshot"] == f"{expected}/v1/runs/{run_id}"


async def test_a_finished_run_is_posted_once_signed_with_links_and_no_answer(
    make_service: MakeService, client: httpx.AsyncClient, receiver: Receiver, tmp_path: Path
) -> None:
    service = await hooked(make_service)
    created = await create(client, service, receiver.url())
    assert created.status_code == 201, created.text
    assert created.json()["options"]["webhook"] == {"url": receiver.url()}
    run_id = created.json()["id"]

    (got,) = await receiver.wait_for(1)
    payload = got.verify(await server_secret(tmp_path / "data", SECRET))
    assert payload["type"] == "run.completed"
    data = payload["data"]
    assert data["run_id"] == run_id
    assert data["status"] == "completed"
    assert data["error"] is None
    assert data["question"] == "Why hook?"
    assert data["answer_chars"] > 0
    assert "answer" not in data
    assert data["timings_ms"]["total"] >= 0
    assert data["links"] == {
        "snapshot": service.url(f"/v1/runs/{run_id}"),
        "events": service.url(f"/v1/runs/{run_id}/events"),
        "recording": service.url(f"/v1/runs/{run_id}/recording"),
    }
    assert got.headers["webhook-id"].startswith("msg_")
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["User-Agent"].startswith("research-service/")
    # Another secret does not verify it.
    with pytest.raises(WebhookVerificationError):
        got.verify(CONFIGURED)
    # The links lead to the run.
    recording = await client.get(data["links"]["recording"])
    assert recording.status_code == 200

    (delivery,) = await settled(client, service, run_id)
    assert delivery == {
        "url": receiver.url(),
        "state": "delivered",
        "attempts": 1,
        "last_error": None,
    }
    assert len(receiver.received) == 1


async def test_a_cancelled_run_is_posted_as_cancelled(
    make_service: MakeService, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    service = await hooked(make_service)
    service.llm.hold_after = 1
    run_id = (await create(client, service, receiver.url())).json()["id"]
    await service.until_held()
    cancelled = await client.post(service.url(f"/v1/runs/{run_id}/cancel"))
    assert cancelled.status_code == 202
    (got,) = await receiver.wait_for(1)
    assert got.json["type"] == "run.cancelled"
    assert got.json["data"]["error"]["code"] == "cancelled"


async def test_failures_are_retried_with_the_same_id_until_taken(
    make_service: MakeService, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.failures = 3
    service = await hooked(make_service, webhook_secret=CONFIGURED)
    run_id = (await create(client, service, receiver.url())).json()["id"]

    attempts = await receiver.wait_for(4)
    assert len({got.headers["webhook-id"] for got in attempts}) == 1
    # Each attempt is signed anew, and each verifies.
    assert all(got.verify(CONFIGURED)["data"]["run_id"] == run_id for got in attempts)
    (delivery,) = await settled(client, service, run_id)
    assert (delivery["state"], delivery["attempts"]) == ("delivered", 4)
    scraped = metric_samples((await client.get(service.url("/metrics"))).text)
    assert scraped['research_webhook_attempts_total{outcome="failed"}'] == 3
    assert scraped['research_webhook_attempts_total{outcome="ok"}'] == 1
    assert scraped['research_webhooks_total{state="delivered"}'] == 1
    assert scraped['research_webhooks_total{state="failed"}'] == 0


async def test_receivers_that_keep_failing_hold_up_no_other_receiver_s_webhooks(
    make_service: MakeService, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    """More deliveries failing for good than the dispatcher sends at once (anyone with a key
    can ask for them): another receiver still gets its webhook at once, since a delivery
    waits for its next attempt in the outbox, not in one of the sends."""
    service = await hooked(make_service)
    async with Receiver() as failing:
        failing.failures = -1  # every attempt: 500
        for _ in range(MAX_IN_FLIGHT + 8):
            assert (await create(client, service, failing.url())).status_code == 201
        await failing.wait_for(MAX_IN_FLIGHT + 8)  # each tried (and retried) meanwhile
        run_id = (await create(client, service, receiver.url())).json()["id"]
        (got,) = await receiver.wait_for(1, timeout=10)
        assert got.json["data"]["run_id"] == run_id


async def test_the_wait_between_attempts_doubles_up_to_an_hour() -> None:
    assert [backoff(5.0, n) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff(5.0, 30) == MAX_WAIT_S


async def test_an_unanswered_delivery_is_sent_after_a_restart(
    receiver: Receiver, tmp_path: Path
) -> None:
    """A process killed mid-retry leaves the delivery in the run store; the next one sends it."""
    receiver.failures = -1
    data = tmp_path / "data"
    env = {"RESEARCH_DATA_DIR": str(data), "RESEARCH_SECRET": SECRET}
    # The next attempt is due 2 s after the first: after the restart, on the schedule kept.
    args = ("--port", "0", "--fetch-allow", "127.0.0.1", "--webhook-retry-s", "2")
    first = await start(*args, env=env)
    async with httpx.AsyncClient(base_url=first.base, timeout=10) as client:
        created = await client.post(
            "/v1/runs",
            json={"question": "Who waits?", "options": {"webhook": {"url": receiver.url()}}},
        )
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        (refused,) = await receiver.wait_for(1)
        # The attempt is recorded before the wait: then the process dies.
        await first.wait_log(rb"attempt 1 failed")
    first.process.send_signal(signal.SIGKILL)
    await first.process.wait()

    receiver.failures = 0
    second = await start(*args, env=env)
    try:
        delivered = (await receiver.wait_for(2))[1]
        assert delivered.headers["webhook-id"] == refused.headers["webhook-id"]
        payload = delivered.verify(await server_secret(data, SECRET))
        assert payload["data"]["run_id"] == run_id
    finally:
        await stop(second)


async def test_the_server_wide_url_hears_of_every_run_with_the_configured_secret(
    make_service: MakeService, client: httpx.AsyncClient, receiver: Receiver, tmp_path: Path
) -> None:
    service = await hooked(
        make_service, webhook_url=receiver.url("/all"), webhook_secret=CONFIGURED
    )
    run_id = (await create(client, service, None)).json()["id"]
    (got,) = await receiver.wait_for(1)
    assert got.verify(CONFIGURED)["data"]["run_id"] == run_id
    # A one-shot GET /v1/research is heard of too.
    async with client.stream("GET", service.url("/v1/research"), params={"q": "one shot"}) as s:
        async for _ in s.aiter_bytes():
            pass
    second = (await receiver.wait_for(2))[1]
    assert second.verify(CONFIGURED)["data"]["question"] == "one shot"
    shown = await cli_process.run(
        "webhook-secret", "--data-dir", str(tmp_path), RESEARCH_WEBHOOK_SECRET=CONFIGURED
    )
    assert shown.stdout == ""
    assert "RESEARCH_WEBHOOK_SECRET is set" in shown.stderr


async def test_a_key_s_runs_are_signed_with_the_secret_keys_create_showed(
    make_service: MakeService, client: httpx.AsyncClient, receiver: Receiver, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    made = await cli_process.run("keys", "create", "alice", "--data-dir", str(data))
    assert made.returncode == 0, made.stderr
    shown, key = made.stdout.splitlines()[-2:]
    assert shown.startswith("webhook-secret whsec_")
    alice_secret = shown.split()[1]
    keys = SqliteKeys(data / RUN_STORE_FILE)
    try:
        _, bob = keys.create("bob", admin=False)
    finally:
        keys.close()
    # keys create made the signing secret in --data-dir; the service uses the same one.
    service = await hooked(make_service, auth="keys", secret=None)
    created = await create(client, service, receiver.url(), Authorization=f"Bearer {key}")
    assert created.status_code == 201, created.text
    (got,) = await receiver.wait_for(1)
    assert got.verify(alice_secret)["data"]["run_id"] == created.json()["id"]
    again = await cli_process.run("webhook-secret", "--key", "alice", "--data-dir", str(data))
    assert again.stdout.strip() == alice_secret
    bob_secret = await cli_process.run("webhook-secret", "--key", "bob", "--data-dir", str(data))
    with pytest.raises(WebhookVerificationError):
        got.verify(bob_secret.stdout.strip())
    # Bob does not see alice's run, nor its deliveries.
    hidden = await client.get(
        service.url(f"/v1/runs/{created.json()['id']}"), headers={"Authorization": f"Bearer {bob}"}
    )
    assert hidden.status_code == 404


async def test_the_server_wide_url_is_shown_to_admins_only(
    make_service: MakeService, client: httpx.AsyncClient, receiver: Receiver, tmp_path: Path
) -> None:
    """The operator's `--webhook-url` (with a secret in its query here) is not the run
    owner's: her snapshot, and one opened with her run's stream token, show her own
    delivery only; an admin's shows both."""
    keys = SqliteKeys(tmp_path / "data" / RUN_STORE_FILE)
    try:
        _, alice = keys.create("alice", admin=False)
        _, ops = keys.create("ops", admin=True)
    finally:
        keys.close()
    operators = receiver.url("/ops?token=OPERATORS-SECRET")
    service = await hooked(make_service, auth="keys", webhook_url=operators)
    created = await create(client, service, receiver.url("/alice"), Authorization=f"Bearer {alice}")
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    await receiver.wait_for(2)

    def snapshot(**how: Any) -> Any:
        return client.get(service.url(f"/v1/runs/{run_id}"), **how)

    as_admin = await snapshot(headers={"Authorization": f"Bearer {ops}"})
    assert sorted(d["url"] for d in as_admin.json()["webhooks"]) == sorted(
        [receiver.url("/alice"), operators]
    )
    token = httpx.URL(created.json()["events_url"]).params["token"]
    for seen in (
        await snapshot(headers={"Authorization": f"Bearer {alice}"}),
        await snapshot(params={"token": token}),
    ):
        assert seen.status_code == 200, seen.text
        assert [d["url"] for d in seen.json()["webhooks"]] == [receiver.url("/alice")]
        assert "OPERATORS-SECRET" not in seen.text


@pytest.mark.parametrize(
    ("webhook", "says"),
    [
        ("https://example.com/hook", "options.webhook must be an object with one field, url"),
        (None, "options.webhook must be an object with one field, url"),
        ({"url": "https://example.com/hook", "x": 1}, "one field, url"),
        ({"url": 5}, "must be a non-empty string"),
        ({"url": " "}, "must be a non-empty string"),
        ({"url": "ftp://example.com/hook"}, "absolute http or https URL"),
        ({"url": "/relative"}, "absolute http or https URL"),
        ({"url": "https://user:pw@example.com/"}, "user name or password"),
        ({"url": "https://example.com/" + "a" * 2100}, "longer than 2048"),
        # yarl would drop the lone surrogate and hand back another URL.
        ({"url": "https://example.com/hook\ud800"}, "not valid Unicode text"),
        ({"url": "http://127.0.0.1:9/hook"}, "127.0.0.1 is a loopback address"),
        ({"url": "http://10.1.2.3/hook"}, "private"),
        ({"url": "http://[::1]/hook"}, "loopback"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "link-local"),
        ({"url": "http://localhost:9/hook"}, "loopback"),
    ],
)
async def test_a_bad_or_refused_url_is_a_400_and_makes_no_run(
    make_service: MakeService, client: httpx.AsyncClient, webhook: Any, says: str
) -> None:
    service = await make_service(store="sqlite")
    # As JSON escapes (json.dumps's default), which carry lone surrogates too.
    body = json.dumps({"question": "q?", "options": {"webhook": webhook}})
    response = await client.post(
        service.url("/v1/runs"), content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.headers["Content-Type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["field"].startswith("options.webhook")
    assert says in problem["detail"]
    assert (await client.get(service.url("/v1/runs"))).json()["runs"] == []


async def test_a_server_wide_url_the_guard_refuses_stops_start_up(tmp_path: Path) -> None:
    finished = await cli_process.run(
        "serve", "--data-dir", str(tmp_path), "--webhook-url", "http://127.0.0.1:9/hook"
    )
    assert finished.returncode == 2
    assert "127.0.0.1 is a loopback address" in finished.stderr


async def test_the_memory_store_sends_them_too(
    make_service: MakeService, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    service = await hooked(make_service, store="memory", webhook_secret=CONFIGURED)
    run_id = (await create(client, service, receiver.url())).json()["id"]
    (got,) = await receiver.wait_for(1)
    assert got.verify(CONFIGURED)["data"]["run_id"] == run_id
    (delivery,) = await settled(client, service, run_id)
    assert delivery["state"] == "delivered"


@pytest.mark.parametrize(
    "raw_request",
    list(REQUESTS_THAT_CREATE_A_RUN.values()),
    ids=list(REQUESTS_THAT_CREATE_A_RUN),
)
async def test_a_run_whose_client_left_while_it_was_stored_is_still_heard_of(
    make_service: MakeService, receiver: Receiver, tmp_path: Path, raw_request: bytes
) -> None:
    """The client closes while its run's record is being stored: the run starts, and its
    webhooks are owed all the same (they are part of the run's creation)."""
    service = await hooked(
        make_service, webhook_url=receiver.url("/all"), webhook_secret=CONFIGURED
    )
    port = service.server.port
    assert port is not None
    http_server = served_connections(service)
    idle_connections = len(http_server.connections)
    with store_writes_held(tmp_path / "data" / RUN_STORE_FILE):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(raw_request)
            await wait_until(lambda: service.manager.active_runs == 1)
        await wait_until(lambda: len(http_server.connections) == idle_connections)
    run_id = await stored_run_id(service)
    (got,) = await receiver.wait_for(1)
    assert got.verify(CONFIGURED)["data"]["run_id"] == run_id


@pytest.mark.parametrize("url", ["https://x.example/research?a=1", "https://x.example/#top"])
def test_a_public_url_with_a_query_or_fragment_is_refused_at_start(url: str) -> None:
    with pytest.raises(ConfigError, match=r"public_url is not a usable URL .*no query or fragment"):
        Settings(public_url=url)
