"""Property tests of the access checks: no header value or token grants what it should not.

One service (auth keys: a keys file and a store key) runs for the module in a thread with its
own event loop; hypothesis drives plain synchronous requests at it with httpx.Client.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from research_service.auth.key_store import SqliteKeys
from research_service.auth.tokens import Signer
from research_service.runs.sqlite_db import RUN_STORE_FILE
from tests.conftest import Service, service_factory
from tests.fakes import ScriptedLLM, ScriptedSearch

PROBLEMS: Final = "https://research-service.dev/problems/"
SECRET: Final = "property-tests-signing-secret-0123456789"
ALICE: Final = "alice-0123456789abcdefghijklmnopqrstuv"
COOKIE: Final = "research_session"
APP: Final = "https://app.example"
QUESTION: Final = {"question": "Who may read this?"}
#: aiohttp refuses a request line or header over this many bytes (414 / 431 problems).
FIELD_LIMIT: Final = 8190
START_TIMEOUT_S: Final = 20.0
PROPERTY: Final = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
#: Answers the HTTP parser gives before any of the service's checks run. (A header value too
#: long is a 431, or a 414 when the value starts like a URL, as Origin and Referer do: aiohttp's
#: C parser reports only the value, which the service cannot tell from a request line.)
PROTOCOL_SLUGS: Final = {"malformed-request", "request-too-large", "uri-too-long"}
PARSER_STATUSES: Final = (400, 414, 431)
#: httpx refuses a longer URL component itself.
CLIENT_URL_LIMIT: Final = 60_000
ENDPOINTS: Final = ("list", "run", "events", "create")
#: The routes a stream token opens.
TOKEN_ENDPOINTS: Final = ("run", "events")


# -- one service for the module, in a thread of its own ---------------------------------------


@dataclass
class Live:
    """The running service and the real credentials of its two users."""

    service: Service
    loop: asyncio.AbstractEventLoop
    stop: asyncio.Event
    port: int = 0
    bob: str = ""  # a store key (rsk_<id>_<secret>)
    alice_run: str = ""
    alice_token: str = ""
    alice_session: str = ""
    bob_run: str = ""
    bob_token: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def path(self, endpoint: str) -> tuple[str, str]:
        """The method and path of an endpoint, on alice's run where it names one."""
        return {
            "list": ("GET", "/v1/runs"),
            "run": ("GET", f"/v1/runs/{self.alice_run}"),
            "events": ("GET", f"/v1/runs/{self.alice_run}/events"),
            "create": ("POST", "/v1/runs"),
            "research": ("GET", "/v1/research"),
        }[endpoint]


def _serve(
    tmp: Path, keys: Path, found: list[Live | BaseException], ready: threading.Event
) -> None:
    async def main() -> None:
        try:
            async with service_factory(tmp, ScriptedLLM(), ScriptedSearch()) as make:
                service = await make(
                    auth="keys",
                    store="sqlite",
                    api_keys_file=keys,
                    secret=SECRET,
                    max_active_runs=10_000,
                    cors_origins=APP,
                )
                live = Live(service, asyncio.get_running_loop(), asyncio.Event())
                live.port = service.server.port or 0
                found.append(live)
                ready.set()
                await live.stop.wait()
        except BaseException as exc:
            found.append(exc)
            ready.set()
            raise

    asyncio.run(main())


def _created(client: httpx.Client, live: Live, key: str) -> tuple[str, str]:
    """A run made with `key`, read to its end; its id and stream token."""
    response = client.post(
        f"{live.base}/v1/runs", json=QUESTION, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 201, response.text
    run_id: str = response.json()["id"]
    token: str = httpx.URL(response.json()["events_url"]).params["token"]
    ended = client.get(f"{live.base}/v1/runs/{run_id}/events?token={token}")
    assert "event: done" in ended.text
    return run_id, token


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("properties")
    keys = tmp / "keys.txt"
    keys.write_text(f"alice:{ALICE}\n", encoding="utf-8")
    found: list[Live | BaseException] = []
    ready = threading.Event()
    thread = threading.Thread(target=_serve, args=(tmp, keys, found, ready), daemon=True)
    thread.start()
    assert ready.wait(START_TIMEOUT_S), "the service did not start"
    started = found[0]
    if isinstance(started, BaseException):
        raise started
    try:
        store = SqliteKeys(tmp / "data" / RUN_STORE_FILE)
        try:
            _, started.bob = store.create("bob", admin=False)
        finally:
            store.close()
        with httpx.Client(timeout=10.0) as client:
            started.alice_run, started.alice_token = _created(client, started, ALICE)
            started.bob_run, started.bob_token = _created(client, started, started.bob)
            signed_in = client.post(f"{started.base}/v1/session", json={"api_key": ALICE})
            assert signed_in.status_code == 200, signed_in.text
            started.alice_session = signed_in.cookies[COOKIE]
        yield started
    finally:
        started.loop.call_soon_threadsafe(started.stop.set)
        thread.join(START_TIMEOUT_S)
        assert not thread.is_alive(), "the service did not stop"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as client:
        yield client


def assert_serving(live: Live, http: httpx.Client) -> None:
    """After a batch of hostile requests, a plain valid one is still answered."""
    http.cookies.clear()
    key = {"Authorization": f"Bearer {ALICE}"}
    listed = http.get(f"{live.base}/v1/runs", headers=key)
    assert listed.status_code == 200, listed.text
    assert listed.json()["runs"]
    run = http.get(f"{live.base}/v1/runs/{live.alice_run}", headers=key)
    assert run.status_code == 200, run.text
    assert run.json()["status"] == "completed"
    assert http.get(f"{live.base}/healthz").status_code == 200


# -- what hypothesis sends --------------------------------------------------------------------

#: Any text the HTTP client can put in a URL (no lone surrogates).
TEXT: Final = st.text(st.characters(exclude_categories=["Cs"]), max_size=80)
LONG: Final = st.builds(
    lambda char, count: char * count,
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00\r\n"),
    st.integers(min_value=1000, max_value=9200),
)


def flipped(value: str) -> st.SearchStrategy[str]:
    """`value` with one character changed."""
    return st.builds(
        lambda index, char: value[:index] + char + value[index + 1 :],
        st.integers(min_value=0, max_value=len(value) - 1),
        st.characters(exclude_categories=["Cs"]),
    ).filter(lambda changed: changed != value)


def near(value: str) -> st.SearchStrategy[str]:
    """Values close to a real credential: one character off, cut short, run on, cased."""
    return st.one_of(
        flipped(value),
        st.integers(min_value=0, max_value=len(value) - 1).map(lambda n: value[:n]),
        st.integers(min_value=1, max_value=len(value) - 1).map(lambda n: value[n:]),
        TEXT.filter(lambda s: s.strip() != "").map(lambda s: value + s),
        TEXT.filter(lambda s: s.strip() != "").map(lambda s: s + value),
        st.just(value.upper()).filter(lambda v: v != value),
        st.just(value.lower()).filter(lambda v: v != value),
        st.just(value + value),
        st.just(f'"{value}"'),
    )


def fields_changed(live: Live, signed: str) -> st.SearchStrategy[str]:
    """A signed value (`a.b[.c].sig`) with a field changed and the signature kept."""
    *fields, signature = signed.split(".")
    other_values = [live.bob_run, key_id_in(live.alice_token), key_id_in(live.bob_token), "0"]
    expires = fields[-1]
    other_values += [str(int(expires) + 1), str(int(expires) - 7200), f"0{expires}"]
    return st.builds(
        lambda index, other: ".".join([*fields[:index], other, *fields[index + 1 :], signature]),
        st.integers(min_value=0, max_value=len(fields) - 1),
        st.sampled_from(other_values),
    ).filter(lambda changed: changed != signed)


def key_id_in(token: str) -> str:
    """The key id a stream token names (`run.key.expires.signature`)."""
    return token.split(".")[1]


def forged(live: Live, *, purpose: str) -> st.SearchStrategy[str]:
    """Values signed with the real secret that still open nothing as a `purpose` credential.

    Expired ones, one naming a key that does not exist, bob's token (another run), and
    every value signed for the other purpose (a session is no stream token, and back).
    """
    signer = Signer(SECRET.encode())
    now = int(time.time())
    alice = key_id_in(live.alice_token)
    nobody = "file-000000000000"
    tokens = [
        signer.stream_token(run_id=live.alice_run, key_id=alice, expires=1),
        signer.stream_token(run_id=live.alice_run, key_id=alice, expires=now - 1),
        signer.stream_token(run_id=live.alice_run, key_id=nobody, expires=now + 600),
        live.bob_token,
    ]
    sessions = [
        signer.session(key_id=alice, expires=1),
        signer.session(key_id=alice, expires=now - 1),
        signer.session(key_id=nobody, expires=now + 600),
    ]
    if purpose == "token":
        return st.sampled_from([*tokens, *sessions, live.alice_session])
    return st.sampled_from([*sessions, *tokens, live.alice_token])


def store_key_changed(key: str) -> st.SearchStrategy[str]:
    """A store key (`rsk_<id>_<secret>`) with another id, or another key's secret."""
    prefix, key_id, secret = key[:4], key[4:16], key[17:]
    assert key == f"{prefix}{key_id}_{secret}"
    return st.sampled_from(
        [
            f"{prefix}{'0' * 12}_{secret}",
            f"{prefix}{key_id[::-1]}_{secret}",
            f"{prefix}{key_id.upper()}_{secret}",
            f"{prefix}{key_id}_{secret[::-1]}",
            f"{prefix}{key_id}_{'A' * len(secret)}",
            f"{prefix}{key_id}{secret}",
        ]
    ).filter(lambda changed: changed != key)


def bad_authorization(live: Live) -> st.SearchStrategy[str]:
    return st.one_of(
        TEXT,
        LONG,
        near(f"Bearer {ALICE}"),
        near(ALICE).map(lambda key: f"Bearer {key}"),
        near(live.bob).map(lambda key: f"Bearer {key}"),
        store_key_changed(live.bob).map(lambda key: f"Bearer {key}"),
        st.sampled_from(
            [
                "",
                "Bearer",
                "Bearer ",
                f"Basic {ALICE}",
                f"Token {ALICE}",
                f"Bearer{ALICE}",
                f"{ALICE}",
                f"Bearer {live.alice_token}",
                f"Bearer {live.alice_session}",
                f"Bearer {ALICE}, Bearer {ALICE}",
            ]
        ),
    )


def bad_token(live: Live) -> st.SearchStrategy[str]:
    return st.one_of(
        TEXT,
        LONG.filter(lambda token: url_length(token) < CLIENT_URL_LIMIT),
        near(live.alice_token),
        fields_changed(live, live.alice_token),
        forged(live, purpose="token"),
    )


def bad_session(live: Live) -> st.SearchStrategy[str]:
    return st.one_of(
        TEXT,
        LONG,
        near(live.alice_session),
        fields_changed(live, live.alice_session),
        forged(live, purpose="session"),
        st.just(ALICE),
    )


def header_bytes(value: str) -> bytes:
    """`value` as header bytes the client will send: UTF-8, no CR, LF, NUL or framing space.

    (h11 refuses those outright; every other byte, control characters too, goes out.)
    """
    raw = re.sub(rb"[\x00\n\r\x0b\x0c]", b"", value.encode("utf-8"))
    return raw.strip(b" \t")


# -- what the service must answer --------------------------------------------------------------


def authorization_grants(value: str, key: str) -> bool:
    """Whether an Authorization value carries `key`: the Bearer scheme in any case (RFC 6750),
    whitespace around the key and the value ignored."""
    scheme, _, rest = value.strip().partition(" ")
    return scheme.lower() == "bearer" and rest.strip() == key


def session_cookie(value: str) -> str | None:
    """The session in what follows `research_session=` in a Cookie header (RFC 6265: up to
    the next `;`, and a value may come in double quotes)."""
    value = value.split(";", 1)[0].strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def needs_parser_leeway(*values: bytes) -> bool:
    """Whether the HTTP parser itself may refuse a request with these header values."""
    return any(
        len(v) > FIELD_LIMIT - 100 or re.search(rb"[\x01-\x08\x0e-\x1f\x7f]", v) for v in values
    )


def url_length(token: str | None) -> int:
    """How long a token makes the request line, percent-encoded."""
    return 0 if token is None else len(urllib.parse.quote(token.encode("utf-8"), safe=""))


def assert_problem(response: httpx.Response, *statuses: int) -> dict[str, Any]:
    """A problem+json answer with one of `statuses` and a detail; its body."""
    assert response.status_code < 500, response.text
    assert response.status_code in statuses, (response.status_code, response.text)
    assert response.headers["Content-Type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["type"].startswith(PROBLEMS)
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


def assert_parser_problem(response: httpx.Response) -> None:
    """One of the short problems for a request the HTTP parser would not take."""
    body = assert_problem(response, *PARSER_STATUSES)
    assert body["type"].removeprefix(PROBLEMS) in PROTOCOL_SLUGS


def assert_granted(response: httpx.Response, live: Live, endpoint: str) -> None:
    """A successful answer of `endpoint`, with what it should hold."""
    if endpoint == "create":
        assert response.status_code == 201, response.text
        assert response.json()["events_url"].startswith("/v1/runs/")
    elif endpoint == "events":
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert "event: done" in response.text
    elif endpoint == "run":
        assert response.status_code == 200, response.text
        assert response.json()["id"] == live.alice_run
    else:
        assert response.status_code == 200, response.text
        assert "runs" in response.json()


def send(
    http: httpx.Client,
    live: Live,
    endpoint: str,
    headers: dict[str, bytes],
    token: str | None = None,
) -> httpx.Response:
    http.cookies.clear()  # only the Cookie header the example chose
    method, path = live.path(endpoint)
    params = {} if token is None else {"token": token}
    if endpoint == "research":
        params["q"] = "one-shot"
    body = QUESTION if method == "POST" else None
    return http.request(method, f"{live.base}{path}", params=params, json=body, headers=headers)


# -- credentials --------------------------------------------------------------------------------

ABSENT: Final = "absent"


@dataclass(frozen=True)
class Credentials:
    """One example's credentials: each absent, a real one, or a bad value."""

    authorization: tuple[str, str]  # (kind, value): kind absent | alice | bob | bad
    token: tuple[str, str]  # absent | alice | bad
    session: tuple[str, str]  # absent | alice | bad


@st.composite
def credentials(draw: st.DrawFn, live: Live) -> Credentials:
    def slot(real: dict[str, str], bad: st.SearchStrategy[str]) -> tuple[str, str]:
        kinds = [ABSENT, *real, "bad", "bad", "bad"]
        kind = draw(st.sampled_from(kinds))
        if kind == ABSENT:
            return (ABSENT, "")
        return (kind, real[kind] if kind in real else draw(bad))

    return Credentials(
        authorization=slot(
            {"alice": f"Bearer {ALICE}", "bob": f"Bearer {live.bob}"}, bad_authorization(live)
        ),
        token=slot({"alice": live.alice_token}, bad_token(live)),
        session=slot({"alice": live.alice_session}, bad_session(live)),
    )


def expected(live: Live, endpoint: str, creds: Credentials) -> tuple[int, ...] | str:
    """The statuses the documented order of credentials allows, or "granted".

    The Authorization header decides when present; else a `?token=` (which only a run's
    snapshot and stream take; anywhere else it is a 403); else the session cookie.
    """
    auth_kind, auth = creds.authorization
    token_kind, token = creds.token
    session_kind, session = creds.session
    if token_kind != ABSENT and endpoint not in TOKEN_ENDPOINTS:
        return (403,)
    if auth_kind != ABSENT:
        if authorization_grants(auth, ALICE):
            return "granted"
        if authorization_grants(auth, live.bob):
            # bob's own listing and runs, never alice's run.
            return "granted" if endpoint in ("list", "create") else (404,)
        return (401,)
    if token_kind != ABSENT:
        return "granted" if token == live.alice_token else (401,)
    if session_kind != ABSENT:
        return "granted" if session_cookie(session) == live.alice_session else (401,)
    return (401,)


def test_no_credential_but_an_exactly_valid_one_opens_anything(
    live: Live, http: httpx.Client
) -> None:
    """Never a 5xx, never a 2xx but for a real key, token or session in its documented place."""

    @PROPERTY
    @given(endpoint=st.sampled_from(ENDPOINTS), creds=credentials(live))
    def check(endpoint: str, creds: Credentials) -> None:
        headers: dict[str, bytes] = {}
        if creds.authorization[0] != ABSENT:
            headers["Authorization"] = header_bytes(creds.authorization[1])
        if creds.session[0] != ABSENT:
            headers["Cookie"] = header_bytes(f"{COOKIE}={creds.session[1]}")
        token = None if creds.token[0] == ABSENT else creds.token[1]
        # What the service actually receives decides (the client drops CR, LF and framing space).
        sent = Credentials(
            authorization=(creds.authorization[0], headers.get("Authorization", b"").decode()),
            token=creds.token,
            session=(creds.session[0], headers.get("Cookie", b"").decode()[len(COOKIE) + 1 :]),
        )
        response = send(http, live, endpoint, headers, token)

        want = expected(live, endpoint, sent)
        leeway = needs_parser_leeway(*headers.values()) or url_length(token) > FIELD_LIMIT - 200
        if leeway and response.status_code in PARSER_STATUSES:
            assert_parser_problem(response)
        elif want == "granted":
            assert_granted(response, live, endpoint)
        else:
            body = assert_problem(response, *want)
            if response.status_code == 401:
                assert response.headers["WWW-Authenticate"].startswith("Bearer ")
            if response.status_code == 403:
                assert body["type"] == PROBLEMS + "token-not-allowed"

    check()
    assert_serving(live, http)


# -- the browser's headers, with a real key -----------------------------------------------------

#: Spellings of the loopback names a browser may send (the service serves them all).
LOOPBACK_HOSTS: Final = (
    "127.0.0.1:{port}",
    "localhost:{port}",
    "LOCALHOST:{port}",
    "localhost.",
    "127.0.0.1",
    "[::1]:8080",
    "[::1]",
)
_LOOPBACK: Final = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])\.*(:[0-9]{1,5})?")


def host_served(host: str) -> bool:
    """Whether `host` names this service by a loopback name: an independent reading of the rule."""
    return host.isascii() and _LOOPBACK.fullmatch(host.strip().lower()) is not None


def hosts(live: Live) -> st.SearchStrategy[str]:
    loopback = [h.replace("{port}", str(live.port)) for h in LOOPBACK_HOSTS]
    return st.one_of(
        st.sampled_from(loopback),
        st.sampled_from(loopback).flatmap(near),
        st.sampled_from(
            [
                "rebind.attacker.example",
                "localhost.attacker.example",
                "127.0.0.1.nip.io",
                f"127.0.0.1:{live.port}@evil.example",
                "[::ffff:127.0.0.1]",
                "0.0.0.0",
                "127.0.0.2",
            ]
        ),
        TEXT,
        LONG,
    )


def origins(host: str) -> st.SearchStrategy[str | None]:
    return st.one_of(
        st.none(),
        st.just(f"http://{host}"),
        st.just(APP),
        st.sampled_from(
            ["null", "https://evil.example", f"{APP}.evil.example", "http://127.0.0.1:1"]
        ),
        near(f"http://{host}"),
        TEXT,
    )


FETCH_SITES: Final = st.one_of(
    st.none(), st.sampled_from(["same-origin", "none", "same-site", "cross-site"]), TEXT
)


def origin_passes(origin: str | None, fetch_site: str | None, host: str) -> bool:
    """Whether a write with these headers comes from the service's own page or a listed one."""
    if origin is None:
        return fetch_site not in ("cross-site", "same-site")
    return origin in (APP, f"{APP}/") or origin.lower() in (
        f"http://{host}".lower(),
        f"https://{host}".lower(),
    )


@st.composite
def browser_headers(draw: st.DrawFn, live: Live) -> tuple[str, str | None, str | None]:
    host = draw(hosts(live))
    return host, draw(origins(host)), draw(FETCH_SITES)


def test_no_host_origin_or_fetch_site_value_gets_past_the_browser_checks(
    live: Live, http: httpx.Client
) -> None:
    """With a real key: a 2xx only for a loopback Host, and a write only from the own origin."""

    @PROPERTY
    @given(
        endpoint=st.sampled_from([*ENDPOINTS, "research"]),
        browser=browser_headers(live),
    )
    def check(endpoint: str, browser: tuple[str, str | None, str | None]) -> None:
        host, origin, fetch_site = browser
        headers = {"Authorization": f"Bearer {ALICE}".encode(), "Host": header_bytes(host)}
        if origin is not None:
            headers["Origin"] = header_bytes(origin)
        if fetch_site is not None:
            headers["Sec-Fetch-Site"] = header_bytes(fetch_site)
        sent = {name: value.decode() for name, value in headers.items()}
        response = send(http, live, endpoint, headers)

        unsafe = endpoint in ("create", "research")
        if needs_parser_leeway(*headers.values()) and response.status_code in PARSER_STATUSES:
            assert_parser_problem(response)
        elif not host_served(sent["Host"]):
            body = assert_problem(response, 421)
            assert body["type"] == PROBLEMS + "host-not-allowed"
        elif unsafe and not origin_passes(
            sent.get("Origin"), sent.get("Sec-Fetch-Site"), sent["Host"]
        ):
            body = assert_problem(response, 403)
            assert body["type"] == PROBLEMS + "cross-site-request"
        elif endpoint == "research":
            assert response.status_code == 200, response.text
            assert "event: done" in response.text
        else:
            assert_granted(response, live, endpoint)

    check()
    assert_serving(live, http)


def test_no_browser_header_stands_in_for_a_key(live: Live, http: httpx.Client) -> None:
    """Without credentials, whatever Host, Origin or Sec-Fetch-Site say: a problem, never data."""

    @PROPERTY
    @given(endpoint=st.sampled_from([*ENDPOINTS, "research"]), browser=browser_headers(live))
    def check(endpoint: str, browser: tuple[str, str | None, str | None]) -> None:
        host, origin, fetch_site = browser
        headers = {"Host": header_bytes(host)}
        if origin is not None:
            headers["Origin"] = header_bytes(origin)
        if fetch_site is not None:
            headers["Sec-Fetch-Site"] = header_bytes(fetch_site)
        response = send(http, live, endpoint, headers)

        assert_problem(response, *PARSER_STATUSES, 401, 403, 421)
        if response.status_code == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer ")

    check()
    assert_serving(live, http)
